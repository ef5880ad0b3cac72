"""The model cards: Hub metadata, and every python snippet runs (against tiny models, repo ids substituted)."""

import re

import pytest
import torch
import yaml
from test_hub import save_tiny_artifacts

from conftest import REPO_ROOT

CARDS = sorted((REPO_ROOT / "model_cards").glob("*.md"))
REQUIRED_METADATA = {"license", "library_name", "pipeline_tag", "tags"}


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
