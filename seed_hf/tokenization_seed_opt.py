"""The OPT tokenizer extended with SEED image tokens (SEED-OPT's vocabulary)."""

import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, pre_tokenizers
from transformers import GPT2Tokenizer

from .utils import atomic_output_dir, check_output_dir, check_pretrained_source

IMAGE_CODE_TOKEN = "<img_{:05d}>"


class SeedOPTTokenizer(GPT2Tokenizer):
    r"""
    OPT's byte-level BPE tokenizer (facebook/opt-2.7b: GPT-2 vocabulary, `</s>` as BOS and EOS, `<pad>`) extended with
    the SEED image vocabulary: `num_image_tokens` code tokens `<img_00000>`, `<img_00001>`, ... with contiguous ids
    from `image_token_start_id`, the boundary tokens `<img>` / `</img>` that open and close an image block, and the
    `<image>` placeholder that [`SeedProcessor`] expands and the model fills with code ids. All of them are special
    added tokens, so BPE never splits them and `decode(..., skip_special_tokens=True)` drops them.

    The first code id and the count are stored in `tokenizer_config.json`, so the mapping between codes and ids is an
    offset, never a lookup of token strings. Build one from an OPT tokenizer with [`build_seed_opt_tokenizer`] (or
    `conversion_scripts/build_seed_opt_tokenizer.py`); load a built one with `AutoTokenizer.from_pretrained`.

    Args:
        vocab (`str` or `dict[str, int]`, *optional*):
            The BPE vocabulary (or the path of `vocab.json`).
        merges (`str` or `list[str]`, *optional*):
            The BPE merges (or the path of `merges.txt`).
        boi_token (`str`, *optional*, defaults to `"<img>"`):
            Opens an image block.
        eoi_token (`str`, *optional*, defaults to `"</img>"`):
            Closes an image block.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder of one image in the text, and of each of its codes in the processor's output.
        image_token_start_id (`int`, *optional*):
            Id of `<img_00000>`; `None` until [`~SeedOPTTokenizer.add_image_tokens`] has added the codes.
        num_image_tokens (`int`, *optional*, defaults to 8192):
            Number of code tokens (the SEED codebook size).
        image_seq_length (`int`, *optional*, defaults to 32):
            Codes per image, hence code tokens per image block.
        kwargs (*optional*):
            Passed to [`GPT2Tokenizer`].

    Example:

    ```python
    >>> from transformers import AutoTokenizer
    >>> import seed_hf  # registers SeedOPTTokenizer
    >>> tokenizer = AutoTokenizer.from_pretrained("seed-opt-tokenizer")  # doctest: +SKIP
    >>> ids = tokenizer.codes_to_ids(codes)  # (batch, 32) codes in [0, 8192) -> token ids  # doctest: +SKIP
    >>> block = [tokenizer.boi_token_id, *ids[0].tolist(), tokenizer.eoi_token_id]  # doctest: +SKIP
    >>> tokenizer.ids_to_codes(block)  # (1, 32): the codes of each <img> ... </img> block  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        vocab: str | dict[str, int] | None = None,
        merges: str | list[str] | None = None,
        boi_token: str = "<img>",
        eoi_token: str = "</img>",
        image_token: str = "<image>",
        image_token_start_id: int | None = None,
        num_image_tokens: int = 8192,
        image_seq_length: int = 32,
        added_tokens_decoder: dict[int, AddedToken] | None = None,
        **kwargs,
    ):
        # A saved tokenizer's code tokens (and any token added after them) are re-added after the base
        # initialisation, in id order, instead of going through `added_tokens_decoder`: the base class deep-copies its
        # kwargs, which for 8192 tokens is most of the loading time. Added tokens have dense ids, so adding them in id
        # order gives each its saved id back. Special tokens the base would otherwise create first (a `pad_token`
        # added after the codes, or a new `sep_token=` passed to `from_pretrained`) wait until then too, so that they
        # never take an id of the code range.
        added_tokens_decoder = dict(added_tokens_decoder or {})
        later_tokens, later_special_tokens = [], {}
        if image_token_start_id is not None:
            later_tokens = [
                added_tokens_decoder.pop(i) for i in sorted(added_tokens_decoder) if i >= image_token_start_id
            ]
            known = {str(token) for token in added_tokens_decoder.values()}
            known.update(vocab if isinstance(vocab, dict) else ())
            later_special_tokens = _split_unknown_special_tokens(kwargs, known)
        super().__init__(
            vocab=vocab,
            merges=merges,
            boi_token=boi_token,
            eoi_token=eoi_token,
            image_token=image_token,
            added_tokens_decoder=added_tokens_decoder,
            **kwargs,
        )
        if later_tokens:
            self.add_tokens(later_tokens)
        if later_special_tokens:
            self.add_special_tokens(later_special_tokens, replace_extra_special_tokens=False)
        if num_image_tokens < 1 or image_seq_length < 1:
            raise ValueError(
                f"num_image_tokens ({num_image_tokens}) and image_seq_length ({image_seq_length}) must be positive"
            )
        self.image_token_start_id = image_token_start_id
        self.num_image_tokens = num_image_tokens
        self.image_seq_length = image_seq_length
        # Recorded as init kwargs so that `save_pretrained` writes them to `tokenizer_config.json`.
        self.init_kwargs.update(
            image_token_start_id=image_token_start_id,
            num_image_tokens=num_image_tokens,
            image_seq_length=image_seq_length,
        )
        if image_token_start_id is not None:
            self._check_image_tokens()

    def add_image_tokens(self) -> int:
        """
        Add the `num_image_tokens` code tokens, with contiguous ids from `len(self)`, and record the first id in
        `image_token_start_id`. Returns that id. Raises a `ValueError` if the codes are already there (or if the
        vocabulary holds a token of the same name, which would break contiguity).
        """
        if self.image_token_start_id is not None:
            raise ValueError(f"This tokenizer already has image tokens from id {self.image_token_start_id}")
        start = len(self)
        self.add_tokens(
            [
                AddedToken(IMAGE_CODE_TOKEN.format(code), special=True, normalized=False)
                for code in range(self.num_image_tokens)
            ]
        )
        self.image_token_start_id = start
        self._check_image_tokens()
        return start

    def _check_image_tokens(self) -> None:
        """Check that ids `image_token_start_id ...` are exactly `<img_00000>` ... (a corrupted folder fails here)."""
        start, count = self.image_token_start_id, self.num_image_tokens
        found = self.convert_ids_to_tokens(range(start, start + count))
        expected = [IMAGE_CODE_TOKEN.format(code) for code in range(count)]
        if found != expected:
            first = next(index for index, (got, want) in enumerate(zip(found, expected)) if got != want)
            raise ValueError(
                f"Expected the {count} image tokens {expected[0]} ... {expected[-1]} at contiguous ids from {start}, "
                f"but id {start + first} is {found[first]!r} instead of {expected[first]!r}"
            )
        for name in ("boi_token", "eoi_token", "image_token"):
            token_id = getattr(self, f"{name}_id")
            if start <= token_id < start + count:
                raise ValueError(f"{name} {getattr(self, name)!r} has id {token_id}, inside the image-code range")

    def _require_image_tokens(self) -> int:
        if self.image_token_start_id is None:
            raise ValueError("This tokenizer has no image tokens yet: call `add_image_tokens()` first")
        return self.image_token_start_id

    def codes_to_ids(self, codes):
        """
        Map SEED codes to token ids by adding `image_token_start_id` (no string formatting, any shape).

        Args:
            codes (`torch.Tensor`, `np.ndarray` or nested `list` of `int`):
                Codes in `[0, num_image_tokens)`.

        Returns:
            The token ids as int64, of the input's kind and shape: a tensor on the same device, an array or a list.
        """
        start = self._require_image_tokens()
        tensor = _as_int_tensor(codes, "codes")
        if tensor.numel() and (tensor.min() < 0 or tensor.max() >= self.num_image_tokens):
            raise ValueError(
                f"Expected codes in [0, {self.num_image_tokens}), got values from {tensor.min().item()} to "
                f"{tensor.max().item()}"
            )
        return _like(tensor + start, codes)

    def ids_to_codes(self, ids) -> torch.Tensor | list[torch.Tensor]:
        """
        Find every `<img>` ... `</img>` block in token ids and return the codes it holds. Tokens outside the blocks
        (text, padding) are ignored; each block must hold exactly `image_seq_length` code tokens.

        Args:
            ids (`torch.Tensor`, `np.ndarray` or `list`):
                One sequence `(sequence_length,)`, or a batch `(batch_size, sequence_length)` (a list of sequences
                may be ragged).

        Returns:
            For one sequence a `torch.LongTensor` of shape `(num_blocks, image_seq_length)` holding codes in
            `[0, num_image_tokens)`; for a batch, a list with one such tensor per sequence.

        Raises:
            `ValueError`: for a block that is unterminated, nested, closed without being opened, of the wrong length,
            or holding a token that is not a code (e.g. an unfilled `<image>` placeholder).
        """
        self._require_image_tokens()
        if isinstance(ids, (list, tuple)) and ids and not np.isscalar(ids[0]):
            return [
                self._sequence_to_codes(_as_int_tensor(row, "ids"), row_index) for row_index, row in enumerate(ids)
            ]
        tensor = _as_int_tensor(ids, "ids")
        if tensor.ndim == 2:
            return [self._sequence_to_codes(row, row_index) for row_index, row in enumerate(tensor)]
        if tensor.ndim != 1:
            raise ValueError(
                f"Expected ids of shape (sequence_length,) or (batch_size, sequence_length), got {tuple(tensor.shape)}"
            )
        return self._sequence_to_codes(tensor, None)

    def _sequence_to_codes(self, ids: torch.Tensor, row_index: int | None) -> torch.Tensor:
        where = "" if row_index is None else f" of sequence {row_index}"
        if ids.ndim != 1:
            raise ValueError(f"Expected a 1-D sequence of ids{where}, got shape {tuple(ids.shape)}")
        is_open = ids == self.boi_token_id
        positions = torch.nonzero(is_open | (ids == self.eoi_token_id)).flatten()
        # Well-formed blocks alternate open, close, open, close...
        expected_open = torch.arange(len(positions), device=ids.device) % 2 == 0
        misplaced = torch.nonzero(is_open[positions] != expected_open).flatten()
        if len(misplaced):
            index = misplaced[0].item()
            position = positions[index].item()
            if is_open[position]:
                raise ValueError(
                    f"Malformed image block{where}: {self.boi_token} at position {positions[index - 1].item()} is not "
                    f"closed before the next {self.boi_token} at position {position}"
                )
            raise ValueError(f"Malformed image block{where}: {self.eoi_token} at position {position} closes no block")
        if len(positions) % 2:
            raise ValueError(
                f"Unterminated image block{where}: {self.boi_token} at position {positions[-1].item()} has no "
                f"{self.eoi_token}"
            )
        opens, closes = positions[0::2], positions[1::2]
        lengths = closes - opens - 1
        wrong_length = torch.nonzero(lengths != self.image_seq_length).flatten()
        if len(wrong_length):
            index = wrong_length[0].item()
            raise ValueError(
                f"Image block{where} at position {opens[index].item()} holds {lengths[index].item()} tokens, expected "
                f"{self.image_seq_length}"
            )
        inside = ids[opens[:, None] + 1 + torch.arange(self.image_seq_length, device=ids.device)]
        codes = inside - self.image_token_start_id
        not_code = torch.nonzero((codes < 0) | (codes >= self.num_image_tokens))
        if len(not_code):
            block, offset = not_code[0].tolist()
            token_id = inside[block, offset].item()
            hint = " (an unfilled placeholder)" if token_id == self.image_token_id else ""
            raise ValueError(
                f"Image block{where} at position {opens[block].item()} holds token id {token_id}{hint} at position "
                f"{opens[block].item() + 1 + offset}, which is not an image code"
            )
        return codes.long()

    def _decode(self, token_ids, skip_special_tokens: bool = False, image_marker: str | None = None, **kwargs) -> str:
        """
        Decode as [`GPT2Tokenizer`] does; with `image_marker`, each image block (`<img>` up to the next `</img>`, or
        to the end of an unterminated one) becomes that string instead of its tokens.
        """
        if image_marker is None:
            return super()._decode(token_ids, skip_special_tokens=skip_special_tokens, **kwargs)
        ids = np.asarray([token_ids] if isinstance(token_ids, int) else token_ids, dtype=np.int64)
        opens = np.flatnonzero(ids == self.boi_token_id)
        closes = np.flatnonzero(ids == self.eoi_token_id)
        pieces, start = [], 0
        for open_at in opens:
            if open_at < start:  # an <img> inside a block already rendered
                continue
            next_close = np.searchsorted(closes, open_at)
            end = closes[next_close] + 1 if next_close < len(closes) else len(ids)
            text = super()._decode(ids[start:open_at].tolist(), skip_special_tokens=skip_special_tokens, **kwargs)
            pieces += [text, image_marker]
            start = end
        pieces.append(super()._decode(ids[start:].tolist(), skip_special_tokens=skip_special_tokens, **kwargs))
        return "".join(pieces)


def _split_unknown_special_tokens(kwargs: dict, known: set[str]) -> dict:
    """
    Take out of the tokenizer kwargs the special tokens (named ones, and the entries of `extra_special_tokens` /
    `additional_special_tokens`) that are not in `known`, and return them as an `add_special_tokens` dict. A named
    token is left as `None`, so that the base class neither sets a default nor adds it.
    """
    later = {}
    for name in GPT2Tokenizer.SPECIAL_TOKENS_ATTRIBUTES:
        if kwargs.get(name) is not None and str(kwargs[name]) not in known:
            later[name], kwargs[name] = kwargs[name], None
    for name in ("extra_special_tokens", "additional_special_tokens"):
        if isinstance(kwargs.get(name), (list, tuple)):
            unknown = [token for token in kwargs[name] if str(token) not in known]
            if unknown:
                later.setdefault("extra_special_tokens", []).extend(unknown)
                kwargs[name] = [token for token in kwargs[name] if str(token) in known]
    return later


def _as_int_tensor(values, name: str) -> torch.Tensor:
    """An integer tensor viewing `values` (tensor, array or nested list); floats and booleans are refused."""
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.numel() == 0:
        return tensor.long()
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"Expected integer {name}, got dtype {tensor.dtype}")
    return tensor


def _like(tensor: torch.Tensor, reference):
    """`tensor` as int64 in the kind of `reference`: tensor, NumPy array or (nested) list."""
    tensor = tensor.long()
    if isinstance(reference, torch.Tensor):
        return tensor
    if isinstance(reference, np.ndarray):
        return tensor.numpy()
    return tensor.tolist()


def build_seed_opt_tokenizer(
    base: str | os.PathLike, num_image_tokens: int = 8192, image_seq_length: int = 32, **kwargs
) -> SeedOPTTokenizer:
    """
    Extend an OPT tokenizer with the SEED image tokens.

    Args:
        base (`str` or `os.PathLike`):
            An OPT tokenizer: a folder (`vocab.json` + `merges.txt`, or `tokenizer.json`) or a Hub id such as
            `"facebook/opt-2.7b"`.
        num_image_tokens (`int`, *optional*, defaults to 8192):
            Number of code tokens (the SEED codebook size).
        image_seq_length (`int`, *optional*, defaults to 32):
            Codes per image.
        kwargs (*optional*):
            Passed to `SeedOPTTokenizer.from_pretrained` (e.g. `revision`, `cache_dir`).

    Raises:
        `FileNotFoundError` or `OSError`: when `base` is neither a folder nor a reachable or cached Hub repository.
        `ValueError`: when `base` is not a byte-level BPE tokenizer with OPT's special tokens (a folder without
            tokenizer files, such as a SEED tokenizer's, would otherwise give a tokenizer without any text vocabulary).
    """
    if check_pretrained_source(
        base, "the OPT tokenizer", "tokenizer_config.json", kwargs.get("revision"), kwargs.get("cache_dir")
    ):
        kwargs["local_files_only"] = True
    tokenizer = SeedOPTTokenizer.from_pretrained(
        base, num_image_tokens=num_image_tokens, image_seq_length=image_seq_length, **kwargs
    )
    _check_opt_vocabulary(tokenizer, base)
    tokenizer.add_image_tokens()
    return tokenizer


def _check_opt_vocabulary(tokenizer: SeedOPTTokenizer, base: str | os.PathLike) -> None:
    """
    Raise a `ValueError` naming what `base` holds unless its vocabulary is byte-level BPE (all 256 byte symbols) with
    OPT's BOS, EOS and padding tokens in it.
    """
    vocabulary = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=False)
    missing = [symbol for symbol in pre_tokenizers.ByteLevel.alphabet() if symbol not in vocabulary]
    if missing:
        problem = f"its vocabulary has {len(vocabulary)} tokens and lacks {len(missing)} of the 256 byte-level symbols"
    else:
        absent = [
            f"{name} {getattr(tokenizer, name)!r}"
            for name in ("bos_token", "eos_token", "pad_token")
            if getattr(tokenizer, name) not in vocabulary
        ]
        if not absent:
            return
        problem = f"{', '.join(absent)} not in its vocabulary"
    folder = Path(base).expanduser()
    found = (
        f"; the folder holds {', '.join(sorted(path.name for path in folder.iterdir()))}" if folder.is_dir() else ""
    )
    raise ValueError(
        f"{base} is not an OPT tokenizer (byte-level BPE: vocab.json + merges.txt or tokenizer.json, with </s> and "
        f"<pad>): {problem}{found}"
    )


def save_seed_opt_tokenizer(
    base: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    num_image_tokens: int = 8192,
    image_seq_length: int = 32,
    **kwargs,
) -> SeedOPTTokenizer:
    """
    [`build_seed_opt_tokenizer`] and save the result to `output_dir`, written under a temporary name and renamed
    into place only when complete. An existing `output_dir` is a `FileExistsError` unless `overwrite`.
    """
    check_output_dir(output_dir, overwrite)
    tokenizer = build_seed_opt_tokenizer(
        base, num_image_tokens=num_image_tokens, image_seq_length=image_seq_length, **kwargs
    )
    with atomic_output_dir(output_dir, overwrite) as staging:
        tokenizer.save_pretrained(staging)
    return tokenizer


__all__ = ["SeedOPTTokenizer", "build_seed_opt_tokenizer", "save_seed_opt_tokenizer"]
