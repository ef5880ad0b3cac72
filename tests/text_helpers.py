"""
Test helpers for the text side: a small byte-level BPE tokenizer in facebook/opt-2.7b's file format, built offline
with `tokenizers`, and the SEED-OPT tokenizer made from it by the same code as the conversion script.
"""

import json
from pathlib import Path

from tokenizers import Tokenizer, pre_tokenizers
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from seed_hf.tokenization_seed_opt import SeedOPTTokenizer, save_seed_opt_tokenizer

# OPT keeps fairseq's first four entries at the head of vocab.json.
OPT_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
SHAPES = ["circle", "square", "triangle", "star", "cross", "ring"]
CORPUS = [
    *(f"A photo of a {colour} {shape}." for colour in COLOURS for shape in SHAPES),
    *(f"Question: What colour is the {shape}? Answer: {colour}" for colour in COLOURS for shape in SHAPES),
    "The quick brown fox jumps over the lazy dog, and then it runs back home again.",
    "An image of a cat sitting on a table next to a cup of coffee in the morning light.",
    "Describe this picture: two people are walking along the beach at sunset.",
]


def _opt_added_token(content: str) -> dict:
    """A special token as facebook/opt-2.7b's `tokenizer_config.json` writes it."""
    return {
        "__type": "AddedToken",
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def make_opt_base_tokenizer(path: str | Path, vocab_size: int = 512) -> Path:
    """
    Train a small byte-level BPE on `CORPUS` and write it to `path` in facebook/opt-2.7b's format (see
    [`write_opt_tokenizer_files`]). Returns the folder.
    """
    backend = Tokenizer(BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=OPT_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    model = json.loads(backend.to_str())["model"]
    return write_opt_tokenizer_files(path, model["vocab"], [" ".join(pair) for pair in model["merges"]])


def write_opt_tokenizer_files(path: str | Path, vocab: dict[str, int], merges: list[str]) -> Path:
    """
    Write a byte-level BPE as facebook/opt-2.7b ships its tokenizer: `vocab.json` (which must hold `<s>`, `<pad>`,
    `</s>`, `<unk>` at ids 0-3), `merges.txt`, `tokenizer_config.json` and `special_tokens_map.json` (`</s>` as BOS,
    EOS and UNK, `<pad>`, `add_bos_token`). Returns the folder.
    """
    if [vocab.get(token) for token in OPT_SPECIAL_TOKENS] != [0, 1, 2, 3]:
        raise ValueError(f"OPT's vocab.json starts with {OPT_SPECIAL_TOKENS} at ids 0-3")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (path / "merges.txt").write_text("\n".join(["#version: 0.2", *merges]) + "\n")
    special_tokens = {
        "bos_token": _opt_added_token("</s>"),
        "eos_token": _opt_added_token("</s>"),
        "unk_token": _opt_added_token("</s>"),
        "pad_token": _opt_added_token("<pad>"),
    }
    tokenizer_config = {
        "errors": "replace",
        **special_tokens,
        "add_prefix_space": False,
        "add_bos_token": True,
        "special_tokens_map_file": None,
        "name_or_path": "facebook/opt-2.7b",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special_tokens_map = {
        key: {k: v for k, v in value.items() if k != "__type"} for key, value in special_tokens.items()
    }
    (path / "special_tokens_map.json").write_text(json.dumps(special_tokens_map, indent=2))
    return path


def make_seed_opt_tokenizer(
    path: str | Path, num_image_tokens: int = 64, image_seq_length: int = 32
) -> SeedOPTTokenizer:
    """
    Build the SEED-OPT tokenizer as `conversion_scripts/build_seed_opt_tokenizer.py` does, from a base made by
    [`make_opt_base_tokenizer`] in `path / "opt"`, save it to `path / "seed-opt"`, and return it loaded from there.
    The defaults match `conftest.tiny_config()` (codebook 64, 32 codes per image); pass
    `num_image_tokens=8192` for the real vocabulary.
    """
    path = Path(path)
    base = make_opt_base_tokenizer(path / "opt")
    save_seed_opt_tokenizer(
        base, path / "seed-opt", num_image_tokens=num_image_tokens, image_seq_length=image_seq_length
    )
    return SeedOPTTokenizer.from_pretrained(path / "seed-opt")
