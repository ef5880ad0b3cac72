"""
The model cards and the README: Hub metadata and licences, the citation, and every python snippet runs (against tiny
models standing in for the repo ids and folders they name).
"""

import importlib.util
import re

import diffusers
import pytest
import torch
import transformers
import yaml
from PIL import Image

from conftest import REPO_ROOT
from test_hub import save_tiny_artifacts

CARDS = sorted((REPO_ROOT / "model_cards").glob("*.md"))
README = REPO_ROOT / "README.md"
REQUIRED_METADATA = {"license", "library_name", "pipeline_tag", "tags"}
OPT_LICENSE = "https://github.com/facebookresearch/metaseq/blob/main/projects/OPT/MODEL_LICENSE.md"
# Each card's licence is that of the most restrictive upstream weights it holds (SEED itself is Apache-2.0).
CARD_LICENSES = {
    "seed_tokenizer_v1.md": {"license": "apache-2.0"},
    "seed_opt.md": {"license": "other", "license_name": "opt-175b-license", "license_link": OPT_LICENSE},
    "seed_decode_pipeline.md": {"license": "creativeml-openrail-m"},
}
# The folders the README's snippets name, and the tiny artifact (see `save_tiny_artifacts`) standing in for each.
README_FOLDERS = {
    "seed-tokenizer-v1": "tokenizer",
    "seed-opt-tokenizer": "text/seed-opt",
    "seed-opt-2.7b": "seed-opt",
    "seed-decode-v1": "decode",
}
README_IMAGES = ("cat.jpg", "dog.jpg", "cow.jpg")
# Classes whose `push_to_hub` the README calls: recorded instead of reaching the network.
PUSHING_CLASSES = (
    transformers.PreTrainedModel,
    transformers.PreTrainedTokenizerBase,
    transformers.ImageProcessingMixin,
    transformers.ProcessorMixin,
    diffusers.DiffusionPipeline,
)


def metadata_and_snippets(card):
    text = card.read_text()
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, f"{card.name} has no YAML metadata block"
    return yaml.safe_load(match[1]), re.findall(r"```python\n(.*?)```", text, re.DOTALL)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    save_tiny_artifacts(root)
    return root


def readme_snippets() -> list[tuple[str, str]]:
    """(section heading, code) of each python snippet of the README, in order."""
    snippets, heading = [], None
    for match in re.finditer(r"^## ([^\n]+)$|^```python\n(.*?)^```", README.read_text(), re.DOTALL | re.MULTILINE):
        if match[1]:
            heading = match[1]
        else:
            snippets.append((heading, match[2]))
    return snippets


def test_every_card_is_there():
    assert {card.name for card in CARDS} == {"seed_tokenizer_v1.md", "seed_decode_pipeline.md", "seed_opt.md"}


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.stem)
def test_card_metadata(card):
    metadata, snippets = metadata_and_snippets(card)
    assert REQUIRED_METADATA <= metadata.keys(), card.name
    assert snippets, f"{card.name} shows no usage snippet"
    expected_base = {"seed_opt.md": "facebook/opt-2.7b", "seed_decode_pipeline.md": "CompVis/stable-diffusion-v1-4"}
    assert metadata.get("base_model") == expected_base.get(card.name)


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.stem)
def test_card_license_agrees_with_its_weights(card):
    metadata, _ = metadata_and_snippets(card)
    assert {key: metadata.get(key) for key in ("license", "license_name", "license_link")} == {
        "license_name": None,
        "license_link": None,
        **CARD_LICENSES[card.name],
    }


def test_license_file_and_readme_licence_and_citation():
    license_text = (REPO_ROOT / "LICENSE").read_text()
    assert license_text.startswith("Copyright 2026 The seed_hf authors\n")
    assert "Apache License\n                           Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    assert "license = Apache-2.0" in (REPO_ROOT / "setup.cfg").read_text()

    readme = README.read_text()
    for licence in ("apache-2.0", "creativeml-openrail-m", OPT_LICENSE, "(LICENSE)"):
        assert licence in readme, licence
    citation = re.search(r"```bibtex\n(.*?)```", readme, re.DOTALL)[1]
    assert "Planting a SEED of Vision in Large Language Model" in citation and "2307.08041" in citation
    assert "Ge, Yuying and Ge, Yixiao and Zeng, Ziyun and Wang, Xintao and Shan, Ying" in citation
    for name in ("eva_vit_g.pth", "causal_qformer.pth", "seed_tokenizer.pth"):
        assert f"| `{name}` |" in readme, name
    assert "https://drive.google.com/drive/folders/1xmVXuttQfBPBOe4ZR96Wu1X34uzPkxsS" in readme


@pytest.fixture
def readme_folder(artifacts, tmp_path, monkeypatch):
    """A working folder holding tiny stand-ins for the README's folders and images; pushes are recorded."""
    for name, artifact in README_FOLDERS.items():
        (tmp_path / name).symlink_to(artifacts / artifact)
    for index, name in enumerate(README_IMAGES):
        Image.new("RGB", (48 + 8 * index, 40), (200, 60 * index, 30)).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    pushed = []
    for cls in PUSHING_CLASSES:
        monkeypatch.setattr(cls, "push_to_hub", lambda self, repo_id, *args, **kwargs: pushed.append(repo_id))
    return pushed


@pytest.mark.parametrize("index", range(len(readme_snippets())), ids=lambda index: readme_snippets()[index][0])
def test_readme_snippets_run(index, readme_folder):
    """Each README snippet runs as written in a fresh namespace; "your-org/" repo ids stand for the local folders."""
    heading, snippet = readme_snippets()[index]
    if '"any-to-any"' in snippet and importlib.util.find_spec("torchvision") is None:
        pytest.skip("transformers' any-to-any pipeline needs torchvision, which is not installed")
    assert re.search(r"^(import seed_hf|from seed_hf)", snippet, re.MULTILINE), f"{heading}: import seed_hf first"
    torch.manual_seed(0)
    code = snippet.replace("your-org/", "")
    exec(compile(code, f"README snippet in {heading!r}", "exec"), {"__name__": "__readme__"})
    assert readme_folder == re.findall(r'push_to_hub\("your-org/([^"]+)"', snippet)


@pytest.mark.parametrize("card", CARDS, ids=lambda card: card.stem)
def test_card_snippets_run(card, artifacts, capsys):
    repo_ids = {
        "seed_tokenizer_v1.md": artifacts / "tokenizer",
        "seed_decode_pipeline.md": artifacts / "decode",
        "seed_opt.md": artifacts / "seed-opt",
    }
    _, snippets = metadata_and_snippets(card)
    for snippet in snippets:
        code = snippet.replace("DECODE_REPO_ID", str(artifacts / "decode")).replace(
            "REPO_ID", str(repo_ids[card.name])
        )
        torch.manual_seed(0)
        exec(compile(code, f"{card.name} snippet", "exec"), {"__name__": "__card__"})
    assert capsys.readouterr().out, "the snippets print their results"
