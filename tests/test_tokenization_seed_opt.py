"""Tests of SeedOPTTokenizer: the OPT vocabulary extended with SEED image tokens, and its conversion script."""

import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, GPT2Tokenizer

from seed_hf import SeedImageProcessor, SeedOPTTokenizer
from seed_hf.tokenization_seed_opt import build_seed_opt_tokenizer, save_seed_opt_tokenizer

from conftest import REPO_ROOT, tiny_tokenizer
from seed_opt_helpers import seed_opt_config
from text_helpers import make_opt_base_tokenizer

NUM_CODES = 8192
SEQ_LEN = 32
TEXTS = ["A photo of a red circle.", "Question: What colour is the star? Answer: blue", "dogs & cats, ünïcode"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_opt_base_tokenizer(tmp_path_factory.mktemp("opt"))


@pytest.fixture(scope="module")
def saved_dir(base_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("built") / "seed-opt"
    save_seed_opt_tokenizer(base_dir, output, num_image_tokens=NUM_CODES, image_seq_length=SEQ_LEN)
    return output


@pytest.fixture(scope="module")
def tokenizer(saved_dir):
    return SeedOPTTokenizer.from_pretrained(saved_dir)


def block(tokenizer, codes) -> list[int]:
    return [tokenizer.boi_token_id, *tokenizer.codes_to_ids(list(codes)), tokenizer.eoi_token_id]


def test_base_is_in_opt_format(base_dir):
    vocab = json.loads((base_dir / "vocab.json").read_text())
    assert [vocab[token] for token in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    assert (base_dir / "merges.txt").read_text().startswith("#version")
    opt = GPT2Tokenizer.from_pretrained(base_dir)
    assert (opt.bos_token, opt.eos_token, opt.pad_token) == ("</s>", "</s>", "<pad>")
    assert opt("red").input_ids[0] == vocab["</s>"]  # OPT prepends </s>


def test_text_tokenization_is_unchanged(base_dir, tokenizer):
    opt = GPT2Tokenizer.from_pretrained(base_dir)
    assert tokenizer(TEXTS).input_ids == opt(TEXTS).input_ids
    assert tokenizer.batch_decode(opt(TEXTS).input_ids, skip_special_tokens=True) == TEXTS
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (2, 2, 1)


def test_image_token_layout(base_dir, tokenizer):
    base_length = len(GPT2Tokenizer.from_pretrained(base_dir))
    start = tokenizer.image_token_start_id
    assert (tokenizer.num_image_tokens, tokenizer.image_seq_length) == (NUM_CODES, SEQ_LEN)
    assert len(tokenizer) == base_length + 3 + NUM_CODES
    assert tokenizer.convert_ids_to_tokens(range(start, start + NUM_CODES)) == [
        f"<img_{i:05d}>" for i in range(NUM_CODES)
    ]
    markers = [tokenizer.boi_token_id, tokenizer.eoi_token_id, tokenizer.image_token_id]
    assert tokenizer.convert_ids_to_tokens(markers) == ["<img>", "</img>", "<image>"]
    assert all(base_length <= i < start for i in markers)
    assert all(token.special for i, token in tokenizer.added_tokens_decoder.items() if i >= base_length)


def test_image_tokens_are_never_split(tokenizer):
    start = tokenizer.image_token_start_id
    ids = tokenizer("<img><img_00000><img_08191></img>red<image>", add_special_tokens=False).input_ids
    assert ids == [tokenizer.boi_token_id, start, start + NUM_CODES - 1, tokenizer.eoi_token_id] + tokenizer(
        "red", add_special_tokens=False
    ).input_ids + [tokenizer.image_token_id]
    # A name beyond the codebook is ordinary text.
    assert all(i < tokenizer.boi_token_id for i in tokenizer("<img_08192>", add_special_tokens=False).input_ids)


@pytest.mark.parametrize("kind", ["tensor", "numpy", "list"])
def test_codes_to_ids_round_trip(tokenizer, kind):
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(0, NUM_CODES, (4, SEQ_LEN), generator=generator, dtype=torch.int32)
    codes[0, :2] = torch.tensor([0, NUM_CODES - 1])
    inputs = {"tensor": codes, "numpy": codes.numpy(), "list": codes.tolist()}[kind]
    ids = tokenizer.codes_to_ids(inputs)
    assert type(ids) is type(inputs)
    expected = codes.long() + tokenizer.image_token_start_id
    assert torch.equal(torch.as_tensor(np.asarray(ids)), expected)

    # Blocks between text and padding, in one sequence and in a batch.
    text = tokenizer("A photo of", add_special_tokens=False).input_ids
    pad = tokenizer.pad_token_id
    sequence = [
        pad,
        pad,
        *text,
        *block(tokenizer, codes[0]),
        *text,
        *block(tokenizer, codes[1]),
        tokenizer.eos_token_id,
    ]
    assert torch.equal(tokenizer.ids_to_codes(sequence), codes[:2].long())
    assert torch.equal(tokenizer.ids_to_codes(torch.tensor(sequence)), codes[:2].long())
    second = [*block(tokenizer, codes[2]), *text, *block(tokenizer, codes[3])]
    batch = torch.tensor([sequence, second + [pad] * (len(sequence) - len(second))])
    per_row = tokenizer.ids_to_codes(batch)
    assert [row.tolist() for row in per_row] == [codes[:2].tolist(), codes[2:].tolist()]
    ragged = tokenizer.ids_to_codes([text, block(tokenizer, codes[3])])
    assert (
        per_row[0].dtype == torch.long and ragged[0].shape == (0, SEQ_LEN) and torch.equal(ragged[1], codes[3:].long())
    )


def test_codes_to_ids_keeps_device_and_shape(tokenizer):
    codes = torch.arange(3 * 2 * SEQ_LEN).reshape(3, 2, SEQ_LEN)
    ids = tokenizer.codes_to_ids(codes)
    assert ids.shape == codes.shape and ids.device == codes.device and ids.dtype == torch.long
    assert tokenizer.codes_to_ids([]) == []


@pytest.mark.parametrize(
    "codes, message",
    [
        ([[-1, 0]], r"codes in \[0, 8192\), got values from -1 to 0"),
        (torch.tensor([5, NUM_CODES]), r"codes in \[0, 8192\), got values from 5 to 8192"),
        (np.array([0.0, 1.0]), "Expected integer codes, got dtype torch.float64"),
        (torch.tensor([True]), "Expected integer codes, got dtype torch.bool"),
    ],
)
def test_codes_to_ids_rejects_bad_codes(tokenizer, codes, message):
    with pytest.raises(ValueError, match=message):
        tokenizer.codes_to_ids(codes)


def malformed_sequences(tokenizer):
    """(name, ids, expected error) for the blocks that `ids_to_codes` must refuse."""
    boi, eoi, placeholder = tokenizer.boi_token_id, tokenizer.eoi_token_id, tokenizer.image_token_id
    codes = tokenizer.codes_to_ids(list(range(SEQ_LEN)))
    text = tokenizer("red", add_special_tokens=False).input_ids
    return [
        (
            "unterminated",
            [*text, boi, *codes],
            rf"Unterminated image block: <img> at position {len(text)} has no </img>",
        ),
        ("nested", [boi, *codes[:4], boi, *codes, eoi], r"<img> at position 0 is not closed before the next <img>"),
        ("stray close", [*text, eoi, boi, *codes, eoi], rf"</img> at position {len(text)} closes no block"),
        ("too short", [boi, *codes[:-1], eoi], r"holds 31 tokens, expected 32"),
        ("too long", [boi, *codes, codes[0], eoi], r"holds 33 tokens, expected 32"),
        ("text inside", [boi, *codes[:-1], text[0], eoi], rf"holds token id {text[0]} at position 32, which is not"),
        ("placeholder", [boi, *[placeholder] * SEQ_LEN, eoi], r"\(an unfilled placeholder\) at position 1"),
    ]


@pytest.mark.parametrize("case", range(7))
def test_ids_to_codes_rejects_malformed_blocks(tokenizer, case):
    name, ids, message = malformed_sequences(tokenizer)[case]
    with pytest.raises(ValueError, match=message):
        tokenizer.ids_to_codes(ids)
    # In a batch, the error names the sequence.
    good = block(tokenizer, range(SEQ_LEN))
    with pytest.raises(ValueError, match="of sequence 1"):
        tokenizer.ids_to_codes([good, ids])


def test_ids_to_codes_rejects_bad_shapes(tokenizer):
    with pytest.raises(ValueError, match=r"Expected ids of shape"):
        tokenizer.ids_to_codes(torch.zeros(2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="Expected integer ids"):
        tokenizer.ids_to_codes(torch.zeros(4))


def test_decode_renders_image_blocks(tokenizer):
    text = tokenizer("A photo of", add_special_tokens=False).input_ids
    # The second block is cut short, as a generation that stopped inside an image.
    ids = [tokenizer.bos_token_id, *block(tokenizer, range(SEQ_LEN)), *text, *block(tokenizer, [7])[:-1]]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "A photo of"
    assert tokenizer.decode(ids, image_marker="[img]") == "</s>[img]A photo of[img]"
    assert tokenizer.decode(ids, skip_special_tokens=True, image_marker="") == "A photo of"
    # Without a marker, decoding is the faithful inverse of encoding.
    assert tokenizer(tokenizer.decode(ids), add_special_tokens=False).input_ids == ids


@pytest.mark.parametrize("with_config", [False, True], ids=["tokenizer-only", "with-config-json"])
def test_save_load_through_auto_tokenizer(tokenizer, tmp_path, with_config):
    tokenizer.save_pretrained(tmp_path)
    if with_config:
        seed_opt_config(tokenizer).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is SeedOPTTokenizer
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert loaded.added_tokens_decoder == tokenizer.added_tokens_decoder
    for name in ("image_token_start_id", "num_image_tokens", "image_seq_length", "boi_token_id", "eoi_token_id",
                 "image_token_id", "bos_token_id", "pad_token_id"):  # fmt: skip
        assert getattr(loaded, name) == getattr(tokenizer, name), name
    text = ["<image>A photo of a <img><img_00001></img>", *TEXTS]
    assert loaded(text).input_ids == tokenizer(text).input_ids
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "SeedOPTTokenizer"
    assert (config["image_token_start_id"], config["num_image_tokens"]) == (tokenizer.image_token_start_id, NUM_CODES)


def test_saved_folder_loads_without_the_package(saved_dir, tmp_path):
    """The folder carries its tokenizer module (`auto_map`): a fresh interpreter loads it with remote code."""
    assert (saved_dir / "tokenization_seed_opt.py").is_file()
    code = (
        "import sys; from transformers import AutoTokenizer; "
        f"t = AutoTokenizer.from_pretrained({str(saved_dir)!r}, trust_remote_code=True); "
        "assert 'seed_hf' not in sys.modules, 'seed_hf was imported'; "
        "print(type(t).__name__, t.image_token_start_id, t.codes_to_ids([0, 5]))"
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    start = json.loads((saved_dir / "tokenizer_config.json").read_text())["image_token_start_id"]
    assert result.stdout.split("\n")[-2] == f"SeedOPTTokenizer {start} [{start}, {start + 5}]"


def test_load_refuses_inconsistent_folder(saved_dir, tmp_path):
    shutil.copytree(saved_dir, tmp_path, dirs_exist_ok=True)
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["image_token_start_id"] -= 1
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"contiguous ids from \d+, but id \d+ is '<image>' instead of '<img_00000>'"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_tokenizer_without_codes(base_dir):
    plain = SeedOPTTokenizer.from_pretrained(base_dir, num_image_tokens=4)
    with pytest.raises(ValueError, match=r"no image tokens yet: call `add_image_tokens\(\)`"):
        plain.codes_to_ids([0])
    plain.add_image_tokens()
    assert plain.codes_to_ids([0, 3]) == [plain.image_token_start_id, plain.image_token_start_id + 3]
    with pytest.raises(ValueError, match="already has image tokens"):
        plain.add_image_tokens()
    with pytest.raises(ValueError, match="must be positive"):
        build_seed_opt_tokenizer(base_dir, num_image_tokens=0)
    # A base that already holds a code name cannot give the codes contiguous ids.
    clashing = SeedOPTTokenizer.from_pretrained(base_dir, num_image_tokens=4)
    clashing.add_tokens(["<img_00002>"])
    with pytest.raises(ValueError, match=r"but id \d+ is '<img_00003>' instead of '<img_00002>'"):
        clashing.add_image_tokens()


def test_conversion_script(base_dir, tmp_path, capsys):
    main = runpy.run_path(str(REPO_ROOT / "conversion_scripts" / "build_seed_opt_tokenizer.py"))["main"]
    output = tmp_path / "out"
    arguments = [
        "--base",
        str(base_dir),
        "--output",
        str(output),
        "--num-image-tokens",
        "16",
        "--image-seq-length",
        "4",
    ]
    assert main(arguments) == 0
    loaded = AutoTokenizer.from_pretrained(output)
    assert (loaded.num_image_tokens, loaded.image_seq_length) == (16, 4)
    assert (
        f"image codes at ids {loaded.image_token_start_id}..{loaded.image_token_start_id + 15}"
        in capsys.readouterr().out
    )

    (output / "keep").write_text("")
    assert main(arguments) == 1
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err
    assert (output / "keep").exists()
    assert main([*arguments, "--overwrite"]) == 0
    assert not (output / "keep").exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    assert main(["--base", str(tmp_path / "missing"), "--output", str(tmp_path / "other")]) == 1
    assert not (tmp_path / "other").exists()


def test_new_special_tokens_go_after_the_codes_and_round_trip(saved_dir, tmp_path):
    """A pad token added to a built tokenizer, or new special tokens passed when loading, never take a code id."""
    added = SeedOPTTokenizer.from_pretrained(saved_dir)
    end = added.image_token_start_id + NUM_CODES
    added.add_special_tokens({"pad_token": "<new_pad>"})
    passed = SeedOPTTokenizer.from_pretrained(saved_dir, sep_token="(SEP)", additional_special_tokens=["<a>", "<b>"])
    assert (added.pad_token_id, passed.sep_token_id) == (end, end)
    assert passed.convert_tokens_to_ids(["<a>", "<b>"]) == [end + 1, end + 2]
    for name, tokenizer in (("added", added), ("passed", passed)):
        tokenizer.save_pretrained(tmp_path / name)
        loaded = AutoTokenizer.from_pretrained(tmp_path / name)
        assert loaded.get_vocab() == tokenizer.get_vocab()
        assert loaded.special_tokens_map == tokenizer.special_tokens_map
        assert loaded.extra_special_tokens == tokenizer.extra_special_tokens
        assert loaded.image_token_start_id == tokenizer.image_token_start_id
        text = "(SEP)<a>red<new_pad><img><img_00001></img>"
        assert loaded(text).input_ids == tokenizer(text).input_ids
    assert loaded.codes_to_ids([0, NUM_CODES - 1]) == [end - NUM_CODES, end - 1]


def seed_vision_folder(path):
    """A SEED tokenizer folder (config, weights, image processor): a model folder without tokenizer files."""
    tiny_tokenizer().save_pretrained(path)
    SeedImageProcessor().save_pretrained(path)
    return path


def gpt2_like_folder(base_dir, path):
    """A byte-level BPE without OPT's `<pad>` (GPT-2's layout: `<|endoftext|>` is the default BOS/EOS)."""
    vocab = json.loads((base_dir / "vocab.json").read_text())
    del vocab["<pad>"]
    path.mkdir()
    (path / "vocab.json").write_text(json.dumps(vocab))
    shutil.copy(base_dir / "merges.txt", path)
    return path


def test_build_refuses_a_base_without_an_opt_vocabulary(base_dir, tmp_path, monkeypatch, capsys):
    main = runpy.run_path(str(REPO_ROOT / "conversion_scripts" / "build_seed_opt_tokenizer.py"))["main"]
    monkeypatch.setattr("seed_hf.utils.is_offline_mode", lambda: True)
    cases = [
        (str(seed_vision_folder(tmp_path / "seed")), r"seed is not an OPT tokenizer .* lacks 256 of the 256 byte-level "
         r"symbols; the folder holds config.json, .*model.safetensors, .*preprocessor_config.json"),
        (str(gpt2_like_folder(base_dir, tmp_path / "gpt2")), r"pad_token None not in its vocabulary; the folder holds "
         r"merges.txt, vocab.json"),
        (str(tmp_path / "typo"), r"the OPT tokenizer: no such file or folder: .*typo"),
        (str(base_dir / "vocab.json"), r"vocab.json is a file, expected a folder or a Hub repository id"),
        ("facebook/opt-2.7b", r"facebook/opt-2.7b is not a local folder, and it is not in the Hub cache while "
         r"HF_HUB_OFFLINE is set; download it first"),
    ]  # fmt: skip
    capsys.readouterr()
    for base, message in cases:
        with pytest.raises((ValueError, OSError), match=message):
            build_seed_opt_tokenizer(base, num_image_tokens=16)
        output = tmp_path / "out"
        assert main(["--base", base, "--output", str(output)]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
        assert re.search(message, captured.err) and not output.exists()


def write_hub_cache(cache, repo_id: str, files) -> None:
    """Lay `files` out as the Hub cache holds a downloaded snapshot of `repo_id`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    for file in files:
        shutil.copy(file, repo / "snapshots" / commit / file.name)


def test_build_fails_fast_when_the_hub_is_unreachable(base_dir, tmp_path):
    """
    With the Hub out of reach (and HF_HUB_OFFLINE unset), a Hub id fails at once unless it is cached, and a cached
    one builds from the cache, instead of minutes of retries per file.
    """
    write_hub_cache(tmp_path / "hub", "facebook/opt-2.7b", base_dir.iterdir())
    script = REPO_ROOT / "conversion_scripts" / "build_seed_opt_tokenizer.py"
    code = (
        f"import runpy; main = runpy.run_path({str(script)!r})['main']; "
        f"print(main(['--base', 'facebook/opt-1.3b', '--output', 'missing'])); "
        f"print(main(['--base', 'facebook/opt-2.7b', '--output', 'built', '--num-image-tokens', '16']))"
    )
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_ENDPOINT": "http://127.0.0.1:9",  # nothing listens there: connections are refused at once
        "HF_HUB_CACHE": str(tmp_path / "hub"),
    }
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "1"
    unreachable = "error: the OPT tokenizer: facebook/opt-1.3b is not a local folder, and it is not in the Hub cache"
    assert f"{unreachable} while the Hub cannot be reached" in result.stderr
    assert "Retrying" not in result.stderr and result.stdout.splitlines()[-1] == "0"
    built = AutoTokenizer.from_pretrained(tmp_path / "built")
    assert built("A photo of").input_ids == GPT2Tokenizer.from_pretrained(base_dir)("A photo of").input_ids
