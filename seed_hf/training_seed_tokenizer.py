"""
Training the SEED tokenizer with `Trainer`: batches of (image, caption), Stable Diffusion text-encoder targets
computed once with `datasets.map`, retrieval metrics, codebook-health logging, and a `Trainer` that reports every
loss part.
"""

import os
import zlib
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Array2D, Dataset
from datasets.fingerprint import Hasher
from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer, TrainerCallback
from transformers.image_processing_utils import BaseImageProcessor

from .modeling_seed_training import MAX_TEXT_LENGTH, SeedCausalQFormerPreTrainingOutput

TEXT_TARGETS_COLUMN = "text_targets"


@dataclass
class SeedTokenizerDataCollator:
    r"""
    Builds training batches for either stage from examples with an image and a caption.

    Every batch has `pixel_values`. With `text_tokenizer` (Stage I) it adds the tokenized captions, `input_ids` and
    `attention_mask`; with `text_targets_column` (Stage II) it adds `text_targets`, stacked from that column (see
    [`add_text_targets`]). With `return_caption_ids` it adds `caption_ids`, a checksum of each caption, with which
    [`SeedTokenizerTrainer`] computes retrieval metrics (a duplicate caption counts as the right answer) and which
    it removes before the model sees the batch; leave it off with a plain `Trainer`. Use with
    `TrainingArguments(remove_unused_columns=False)`.

    Args:
        image_processor ([`BaseImageProcessor`]):
            Prepares the images (a [`SeedImageProcessor`]).
        text_tokenizer ([`PreTrainedTokenizerBase`], *optional*):
            The Q-Former's (BERT) tokenizer, for Stage I.
        image_column (`str`, *optional*, defaults to `"image"`):
            Column of the images.
        text_column (`str`, *optional*, defaults to `"caption"`):
            Column of the captions.
        text_targets_column (`str`, *optional*):
            Column of precomputed text-encoder targets, for Stage II.
        max_text_length (`int`, *optional*, defaults to 32):
            Captions are cut to this many tokens (Stage I).
        return_caption_ids (`bool`, *optional*, defaults to `False`):
            Whether to add `caption_ids` for [`SeedTokenizerTrainer`]'s retrieval metrics.
    """

    image_processor: BaseImageProcessor
    text_tokenizer: PreTrainedTokenizerBase | None = None
    image_column: str = "image"
    text_column: str = "caption"
    text_targets_column: str | None = None
    max_text_length: int = MAX_TEXT_LENGTH
    return_caption_ids: bool = False

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        for column in (self.image_column, self.text_column, self.text_targets_column):
            if column is not None and any(feature.get(column) is None for feature in features):
                raise ValueError(f"Each example needs a {column!r} column; got columns {sorted(features[0])}")
        captions = [feature[self.text_column] for feature in features]
        images = [feature[self.image_column] for feature in features]
        batch = {"pixel_values": self.image_processor(images, return_tensors="pt").pixel_values}
        if self.return_caption_ids:
            batch["caption_ids"] = torch.tensor([zlib.crc32(caption.encode()) for caption in captions])
        if self.text_tokenizer is not None:
            text = self.text_tokenizer(
                captions, padding=True, truncation=True, max_length=self.max_text_length, return_tensors="pt"
            )
            batch["input_ids"], batch["attention_mask"] = text.input_ids, text.attention_mask
        if self.text_targets_column is not None:
            batch["text_targets"] = torch.stack(
                [torch.as_tensor(feature[self.text_targets_column], dtype=torch.float32) for feature in features]
            )
        return batch


def add_text_targets(
    dataset: Dataset,
    text_encoder: PreTrainedModel,
    clip_tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    text_column: str = "caption",
    batch_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
) -> Dataset:
    r"""
    Add a `text_targets` column: the Stable Diffusion text encoder's last hidden state for each caption, padded to
    `max_length` tokens as Stable Diffusion pads prompts. Computed once by `datasets.map` and cached under a
    fingerprint of the dataset, the text encoder's weights and the settings, so a resumed run reuses it.

    Args:
        dataset (`Dataset`):
            Rows with a caption.
        text_encoder ([`PreTrainedModel`]):
            The CLIP text encoder (`CLIPTextModel`) whose hidden size is the tokenizer's `generation_embed_dim`.
        clip_tokenizer ([`PreTrainedTokenizerBase`]):
            Its tokenizer.
        max_length (`int`):
            Tokens per caption: the tokenizer's `num_reverse_tokens` (77).
        text_column (`str`, *optional*, defaults to `"caption"`):
            Column of the captions.
        batch_size (`int`, *optional*, defaults to 64):
            Captions per text-encoder call.
        cache_dir (`str` or `os.PathLike`, *optional*):
            Folder of the cache file, named by the fingerprint (`datasets`' default place when left out; that is
            inside the input's folder for a dataset from `load_from_disk`).
    """
    if text_column not in dataset.column_names:
        raise ValueError(f"The dataset has no caption column {text_column!r}, only {dataset.column_names}")
    width = text_encoder.config.hidden_size
    encoder_fingerprint = Hasher.hash(
        [(name, tensor.cpu().numpy()) for name, tensor in sorted(text_encoder.state_dict().items())]
    )
    fingerprint = Hasher.hash(
        [dataset._fingerprint, encoder_fingerprint, clip_tokenizer.get_vocab(), max_length, text_column]
    )
    text_encoder.eval()
    if cache_dir:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)

    @torch.no_grad()
    def encode(batch):
        tokens = clip_tokenizer(
            batch[text_column], padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        hidden = text_encoder(input_ids=tokens.input_ids.to(text_encoder.device)).last_hidden_state
        return {TEXT_TARGETS_COLUMN: hidden.float().cpu().numpy()}

    features = dataset.features.copy()
    features[TEXT_TARGETS_COLUMN] = Array2D(shape=(max_length, width), dtype="float32")
    return dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        features=features,
        new_fingerprint=fingerprint,
        cache_file_name=str(Path(cache_dir) / f"text-targets-{fingerprint}.arrow") if cache_dir else None,
        desc="Text-encoder targets",
    )


def retrieval_metrics(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, caption_ids: torch.Tensor
) -> dict[str, float]:
    r"""
    Recall@1 of image-to-text and text-to-image retrieval by cosine similarity over all pairs given. A retrieved
    item counts as right when its caption equals the query's (`caption_ids` are equal).

    Args:
        image_embeds (`torch.Tensor` of shape `(num_pairs, ...)`): one embedding per image (flattened past dim 0).
        text_embeds (`torch.Tensor` of shape `(num_pairs, ...)`): one embedding per caption, in the same order.
        caption_ids (`torch.Tensor` of shape `(num_pairs,)`): equal for equal captions.
    """
    images = torch.nn.functional.normalize(image_embeds.flatten(1).float(), dim=-1)
    texts = torch.nn.functional.normalize(text_embeds.flatten(1).float(), dim=-1)
    similarity = images @ texts.t()
    image_to_text = caption_ids[similarity.argmax(1)] == caption_ids
    text_to_image = caption_ids[similarity.argmax(0)] == caption_ids
    return {
        "image_to_text_recall@1": image_to_text.float().mean().item(),
        "text_to_image_recall@1": text_to_image.float().mean().item(),
    }


class CodebookMonitor(TrainerCallback):
    r"""
    Codebook health over the last `window` optimizer steps: codes used, the perplexity of their use (the number of
    equally used codes with the same entropy) and dead codes (unused over the whole window). With
    `revive_dead_codes`, every `window` steps the dead rows are re-seeded from randomly chosen latents (quantizer
    inputs) of the last batch, so they sit where the encoder's outputs are; off by default, as in the original.
    Counts are local to each process and restart with a resumed run.

    Args:
        codebook_size (`int`):
            Number of codebook entries.
        window (`int`, *optional*, defaults to 100):
            Steps over which use is counted.
        revive_dead_codes (`bool`, *optional*, defaults to `False`):
            Whether to re-seed dead codebook rows.
        seed (`int`, *optional*, defaults to 0):
            Seed of the choice of latents for revived rows.
    """

    def __init__(self, codebook_size: int, window: int = 100, revive_dead_codes: bool = False, seed: int = 0):
        if window < 1:
            raise ValueError(f"The codebook window must be at least one step, got {window}")
        self.codebook_size = codebook_size
        self.window = window
        self.revive_dead_codes = revive_dead_codes
        self.generator = torch.Generator().manual_seed(seed)
        self.step_counts: deque[torch.Tensor] = deque(maxlen=window)
        self.current_counts = torch.zeros(codebook_size, dtype=torch.long)
        self.recent_latents: torch.Tensor | None = None
        self.revived = 0

    def record(self, codes: torch.Tensor, latents: torch.Tensor) -> None:
        """Count the codes of one forward pass and keep its latents as candidates for revival."""
        counts = torch.bincount(codes.flatten(), minlength=self.codebook_size)
        self.current_counts = self.current_counts.to(counts.device) + counts  # on the model's device: no sync
        self.recent_latents = latents.detach().flatten(0, -2)

    def counts(self) -> torch.Tensor:
        """Uses of each code over the window, the current step included."""
        return sum(self.step_counts, self.current_counts.clone())

    def stats(self) -> dict[str, float]:
        counts = self.counts().cpu()
        total = counts.sum()
        if total == 0:
            return {}
        probabilities = counts[counts > 0].double() / total
        used = int((counts > 0).sum())
        return {
            "codebook_used": used,
            "codebook_dead": self.codebook_size - used,
            "codebook_perplexity": float(torch.exp(-(probabilities * probabilities.log()).sum())),
            "codebook_revived": self.revived,
        }

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.step_counts.append(self.current_counts)
        self.current_counts = torch.zeros_like(self.current_counts)
        if self.revive_dead_codes and state.global_step % self.window == 0 and self.recent_latents is not None:
            self.revive(model.quantizer.codebook.weight)

    @torch.no_grad()
    def revive(self, codebook: torch.Tensor) -> None:
        """Re-seed the rows unused over the window from the most recent latents."""
        dead = (self.counts() == 0).nonzero().flatten().cpu()
        if len(dead) == 0:
            return
        latents = self.recent_latents
        picks = torch.randint(len(latents), (len(dead),), generator=self.generator)
        codebook[dead.to(codebook.device)] = latents[picks.to(latents.device)].to(codebook)
        self.revived += len(dead)


class SeedTokenizerTrainer(Trainer):
    r"""
    A `Trainer` for the two training heads that logs every loss part (`loss_*` fields of the model output) next to
    the total, codebook health in Stage II (with a [`CodebookMonitor`] in `callbacks`), and on evaluation the
    retrieval metrics of [`retrieval_metrics`] (with a [`SeedTokenizerDataCollator`] that has
    `return_caption_ids=True`): Stage I's image and text embeddings, Stage II's generation embeddings against their
    text targets.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.codebook_monitor = next(
            (callback for callback in self.callback_handler.callbacks if isinstance(callback, CodebookMonitor)), None
        )
        self._train_parts = defaultdict(list)
        self._eval_parts = defaultdict(list)
        self._eval_pairs = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        caption_ids = inputs.pop("caption_ids", None)
        outputs = model(**inputs)
        parts = {name: value.detach() for name, value in outputs.items() if name.startswith("loss_")}
        if model.training:
            for name, value in parts.items():
                self._train_parts[name].append(value)  # read at logging time: no device sync per step
            if self.codebook_monitor is not None and outputs.get("codes") is not None:
                self.codebook_monitor.record(outputs["codes"], outputs["latents"])
        else:
            batch_size = len(inputs["pixel_values"])
            for name, value in parts.items():
                self._eval_parts[name].append((value.item(), batch_size))
            if isinstance(outputs, SeedCausalQFormerPreTrainingOutput):
                pair = (outputs.image_embeds, outputs.text_embeds)
            else:
                pair = (outputs.generation_embeds, inputs["text_targets"])
            if caption_ids is not None:
                gathered = self.accelerator.gather_for_metrics((*pair, caption_ids))
                self._eval_pairs.append(tuple(tensor.detach().cpu() for tensor in gathered))
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:  # a training log
            for name, values in self._train_parts.items():
                logs[name] = torch.stack(values).mean().item()
            self._train_parts.clear()
            if self.codebook_monitor is not None:
                logs.update(self.codebook_monitor.stats())
        super().log(logs, *args, **kwargs)

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        self._eval_parts.clear()
        self._eval_pairs.clear()
        output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
        for name, values in self._eval_parts.items():
            total = sum(size for _, size in values)
            output.metrics[f"{metric_key_prefix}_{name}"] = sum(value * size for value, size in values) / total
        if self._eval_pairs:
            image_embeds, text_embeds, caption_ids = (torch.cat(column) for column in zip(*self._eval_pairs))
            for name, value in retrieval_metrics(image_embeds, text_embeds, caption_ids).items():
                output.metrics[f"{metric_key_prefix}_{name}"] = value
        return output


__all__ = [
    "CodebookMonitor",
    "SeedTokenizerDataCollator",
    "SeedTokenizerTrainer",
    "add_text_targets",
    "retrieval_metrics",
]
