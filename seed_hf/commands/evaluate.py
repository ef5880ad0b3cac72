"""
`seed-hf evaluate`: measure SEED the way its paper does, beside the paper's numbers.

- `caption`: SEED-OPT captions (beam search, 5 beams) scored with the COCO caption metrics (CIDEr, BLEU-4, METEOR,
  ROUGE-L; needs Java), e.g. on the COCO Karpathy test split.
- `vqa`: SEED-OPT short answers to "Question: ... Answer:" prompts, scored with the VQAv2 accuracy or GQA exact match.
- `reconstruction`: images -> SEED codes -> pictures (a SeedDecodePipeline), scored with the CLIP image-image
  similarity of each picture to its original, plus the codebook usage over the set.

Each writes OUTPUT/predictions.jsonl (a restart skips the items already predicted), metrics.json and metrics.md.
Data-parallel under `torchrun --nproc-per-node N -m seed_hf.cli evaluate ...` or `accelerate launch`, with the same
results as one process.
"""

import argparse
from datetime import timedelta
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoProcessor

from ..evaluation.metrics import (
    SPICE_SKIPPED,
    caption_metrics,
    clip_image_similarity,
    codebook_usage,
    gqa_exact_match,
    require_java,
    vqa_accuracy,
)
from ..modeling_seed_opt import CAPTION_MAX_NEW_TOKENS, CAPTION_NUM_BEAMS, SeedOPTForConditionalGeneration
from ..processing_seed import SeedProcessor
from . import loading, resolve_pretrained_path

# datasets, diffusers and peft are imported inside the functions that run a task: `seed-hf evaluate --help` loads
# none of them.

# Processes wait for the slowest one before the metrics: allow a long wait rather than torch's 30 minutes.
BARRIER_TIMEOUT = timedelta(days=1)
CAPTION_PROMPT = "<image>A photo of"
VQA_PROMPT = "<image>Question: {question} Answer:"
VQA_MAX_NEW_TOKENS = 10
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
# The published numbers: SEED-OPT2.7B (SEED paper, zero-shot) and the SEED v1 tokenizer's reconstruction (as
# tabulated by VL-GPT; Stable Diffusion v1.5 from the real COCO captions reaches 68.43).
ANCHORS = {
    "caption": {"coco": {"CIDEr": 119.0}},
    "vqa": {"vqav2": {"accuracy": 42.8}, "gqa": {"accuracy": 28.8}},
    "reconstruction": {"coco": {"CLIP similarity": 68.23}, "flickr30k": {"CLIP similarity": 65.22}},
}


def add_data_arguments(parser: argparse.ArgumentParser, benchmarks: list[str], annotations_help: str) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        help="a dataset folder (save_to_disk), a .parquet/.csv/.json(l)/.arrow file or a Hub id; with an annotation or "
        "question file, the image folder",
    )
    parser.add_argument("--annotations", help=annotations_help)
    parser.add_argument("--split", help="split of a dataset with several")
    parser.add_argument("--image-column", default="image", help="(default: image)")
    parser.add_argument("--id-column", help="column of unique item ids (default: the row index)")
    parser.add_argument("--num-samples", type=int, help="evaluate only the first N items")
    parser.add_argument(
        "--benchmark",
        choices=benchmarks,
        default=benchmarks[0],
        help=f"which paper numbers to compare with (default: {benchmarks[0]})",
    )
    parser.add_argument("-o", "--output-dir", required=True, help="folder for predictions.jsonl and the metrics")
    parser.add_argument("--batch-size", type=int, default=8, help="items per batch (default: 8)")
    parser.add_argument("--device", help="torch device (default: this process's GPU when there is one, else cpu)")
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="(default: float32)"
    )
    parser.add_argument("--overwrite", action="store_true", help="start over, replacing an earlier evaluation")


def add_seed_opt_arguments(parser: argparse.ArgumentParser, prompt: str, num_beams: int, max_new_tokens: int) -> None:
    parser.add_argument("--model", required=True, help="SEED-OPT folder or Hub id")
    parser.add_argument("--adapter", help="a LoRA adapter folder from seed-hf finetune, merged into the model")
    parser.add_argument("--prompt", default=prompt, help=f"prompt; <image> marks the image (default: {prompt!r})")
    parser.add_argument("--num-beams", type=int, default=num_beams, help=f"beam search width (default: {num_beams})")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"(default: {max_new_tokens})")


def register(subparsers) -> None:
    parser = subparsers.add_parser("evaluate", description=__doc__)
    tasks = parser.add_subparsers(dest="task", required=True)

    caption = tasks.add_parser("caption", help="SEED-OPT captioning: CIDEr, BLEU-4, METEOR, ROUGE-L")
    add_data_arguments(
        caption, ["coco"], "a COCO-format caption file (images, annotations) for the image folder --dataset"
    )
    caption.add_argument(
        "--references-column", default="captions", help="column of the reference captions (default: captions)"
    )
    add_seed_opt_arguments(caption, CAPTION_PROMPT, CAPTION_NUM_BEAMS, CAPTION_MAX_NEW_TOKENS)
    caption.set_defaults(run=run_caption)

    vqa = tasks.add_parser("vqa", help="SEED-OPT visual question answering: VQAv2 accuracy or GQA exact match")
    add_data_arguments(vqa, ["vqav2", "gqa"], "the VQAv2 answers file of --questions")
    vqa.add_argument(
        "--questions",
        help="official question file: VQAv2 (with --annotations, the answers) or GQA; --dataset is then the image folder",
    )
    vqa.add_argument("--question-column", default="question", help="(default: question)")
    vqa.add_argument(
        "--answers-column",
        help="column of the reference answers: a list per row for vqav2 (default: answers), one string for gqa "
        "(default: answer)",
    )
    add_seed_opt_arguments(vqa, VQA_PROMPT, CAPTION_NUM_BEAMS, VQA_MAX_NEW_TOKENS)
    vqa.add_argument(
        "--length-penalty",
        type=float,
        default=-1.0,
        help="beam-search length penalty; negative favours short answers (default: -1)",
    )
    vqa.set_defaults(run=run_vqa)

    reconstruction = tasks.add_parser("reconstruction", help="CLIP similarity of images drawn back from their codes")
    add_data_arguments(
        reconstruction,
        ["coco", "flickr30k"],
        "a COCO-format caption file (images, annotations) for the image folder --dataset",
    )
    reconstruction.add_argument("--pipeline", required=True, help="SeedDecodePipeline folder or Hub id")
    reconstruction.add_argument("--clip", default=DEFAULT_CLIP, help=f"CLIP model folder or Hub id ({DEFAULT_CLIP})")
    reconstruction.add_argument("--steps", type=int, default=50, help="denoising steps (default: 50)")
    reconstruction.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default: 7.5)")
    reconstruction.add_argument(
        "--scheduler", default="pndm", choices=["pndm", "dpm"], help="pndm (the original's PLMS) or dpm (DPM-Solver++)"
    )
    reconstruction.add_argument("--seed", type=int, default=0, help="seed of every picture's initial noise")
    reconstruction.set_defaults(run=run_reconstruction)


def _check_positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")


def _device(args: argparse.Namespace, state) -> torch.device:
    return torch.device(args.device) if args.device else state.device


def _data_settings(args: argparse.Namespace, data) -> dict:
    return {"task": args.task, "data": data.description, "dtype": args.dtype, "batch_size": args.batch_size}


def _seed_opt_settings(args: argparse.Namespace, data, **specific) -> dict:
    """The settings of a caption or VQA run: the data's, SEED-OPT's and its decoding's, plus the task's `specific`."""
    return {
        **_data_settings(args, data),
        **specific,
        "model": str(args.model),
        "adapter": args.adapter,
        "prompt": args.prompt,
        "num_beams": args.num_beams,
        "max_new_tokens": args.max_new_tokens,
    }


def load_seed_opt(args: argparse.Namespace, device: torch.device):
    """SEED-OPT (with `--adapter` merged) in eval mode on `device`, and its processor; clear errors for wrong folders."""
    from peft import PeftModel

    from .finetune import check_local_path, check_seed_opt_config

    model_path = resolve_pretrained_path(args.model, "seed_opt")
    config = check_seed_opt_config(model_path)  # a Hub id's kind is known only from its config
    processor = AutoProcessor.from_pretrained(model_path)
    if not isinstance(processor, SeedProcessor):
        raise ValueError(f"--model {args.model} has no SEED-OPT processor (processor_config.json)")
    if config.vision_config is None:
        raise ValueError(f"--model {args.model} has no SEED tokenizer inside, so it cannot read images")
    with loading(model_path):
        model = SeedOPTForConditionalGeneration.from_pretrained(
            model_path, config=config, dtype=getattr(torch, args.dtype), use_safetensors=True
        )
    if args.adapter:
        check_local_path(args.adapter, "--adapter")
        with loading(args.adapter):
            model = PeftModel.from_pretrained(model, args.adapter).merge_and_unload()
    return model.to(device).eval(), processor


def generate_texts(
    model, processor, data, indices: list[int], prompts: list[str], args, **generate_kwargs
) -> list[str]:
    """The text SEED-OPT writes after each prompt (the prompt left out), for the images of rows `indices`."""
    inputs = processor(
        images=[data.image(index) for index in indices],
        text=prompts,
        padding=True,
        padding_side="left",
        return_tensors="pt",
    ).to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.no_grad():
        generated = model.generate(
            **inputs, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens, do_sample=False, **generate_kwargs
        )
    new_tokens = generated[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def _check_prompt(prompt: str, image_token: str, *fields: str) -> None:
    if prompt.count(image_token) != 1:
        raise ValueError(f"--prompt must hold {image_token} once, where the image goes; got {prompt!r}")
    for name in fields:
        if "{" + name + "}" not in prompt:
            raise ValueError(f"--prompt must hold {{{name}}}, where the {name} goes; got {prompt!r}")


def run_caption(args: argparse.Namespace) -> int:
    from ..dataset_tokenization import distributed_state
    from ..evaluation.data import load_evaluation_data
    from ..evaluation.runner import predict_resumable

    _check_positive(args, "batch_size", "num_beams", "max_new_tokens")
    require_java()  # before hours of captioning, not after
    data = load_evaluation_data(
        args.dataset,
        args.split,
        args.image_column,
        {"captions": args.references_column},
        args.id_column,
        args.annotations,
    ).head(args.num_samples)
    references = [[value] if isinstance(value, str) else list(value) for value in data.columns["captions"]]
    state = distributed_state(args.device, timeout=BARRIER_TIMEOUT)
    try:
        model, processor = load_seed_opt(args, _device(args, state))
        _check_prompt(args.prompt, processor.image_token)

        def predict(indices: list[int]) -> list[dict]:
            captions = generate_texts(model, processor, data, indices, [args.prompt] * len(indices), args)
            return [{"caption": caption, "references": references[index]} for index, caption in zip(indices, captions)]

        settings = _seed_opt_settings(args, data)
        records = predict_resumable(
            data.ids, predict, args.output_dir, settings, args.batch_size, args.overwrite, state, "captioning"
        )
    finally:
        state.destroy_process_group()
    if records is None:
        return 0
    metrics = caption_metrics(
        {record["id"]: record["caption"] for record in records},
        {record["id"]: record["references"] for record in records},
    )
    return _report(args, data, metrics, note=f"\n{SPICE_SKIPPED}.\n", skipped={"SPICE": SPICE_SKIPPED})


def run_vqa(args: argparse.Namespace) -> int:
    from ..dataset_tokenization import distributed_state
    from ..evaluation.data import load_evaluation_data, load_vqa_files
    from ..evaluation.runner import predict_resumable

    _check_positive(args, "batch_size", "num_beams", "max_new_tokens")
    answers_column = args.answers_column or ("answers" if args.benchmark == "vqav2" else "answer")
    if args.questions:
        data = load_vqa_files(args.dataset, args.questions, args.annotations)
    elif args.annotations:
        raise ValueError("--annotations of seed-hf evaluate vqa are VQAv2 answers: pass their --questions too")
    else:
        data = load_evaluation_data(
            args.dataset,
            args.split,
            args.image_column,
            {"question": args.question_column, "answers": answers_column},
            args.id_column,
        )
    data = data.head(args.num_samples)
    data.columns["answers"] = [_answer_strings(value) for value in data.columns["answers"]]
    _check_answers(data.columns["answers"], args.benchmark, answers_column)
    state = distributed_state(args.device, timeout=BARRIER_TIMEOUT)
    try:
        model, processor = load_seed_opt(args, _device(args, state))
        _check_prompt(args.prompt, processor.image_token, "question")

        def predict(indices: list[int]) -> list[dict]:
            prompts = [args.prompt.format(question=data.columns["question"][index]) for index in indices]
            texts = generate_texts(model, processor, data, indices, prompts, args, length_penalty=args.length_penalty)
            # A short answer is the first line of what is written.
            return [
                {"answer": text.split("\n")[0].strip(), "references": data.columns["answers"][index]}
                for index, text in zip(indices, texts)
            ]

        settings = _seed_opt_settings(args, data, benchmark=args.benchmark, length_penalty=args.length_penalty)
        records = predict_resumable(
            data.ids, predict, args.output_dir, settings, args.batch_size, args.overwrite, state, "answering"
        )
    finally:
        state.destroy_process_group()
    if records is None:
        return 0
    score = vqa_accuracy if args.benchmark == "vqav2" else gqa_exact_match
    accuracy = 100 * sum(score(record["answer"], record["references"]) for record in records) / len(records)
    return _report(args, data, {"accuracy": accuracy})


def _answer_strings(value):
    """VQAv2 answers as strings: Hub copies store the annotators' answers as dicts (`answer`, `answer_id`, ...)."""
    if isinstance(value, dict) and isinstance(value.get("answer"), list):  # a sequence of dicts, read column-wise
        return value["answer"]
    if isinstance(value, list) and value and all(isinstance(item, dict) and "answer" in item for item in value):
        return [item["answer"] for item in value]
    return value


def _check_answers(answers, benchmark: str, column: str) -> None:
    """VQAv2 needs a list of annotators' answers per row, GQA a single answer string."""
    want_list = benchmark == "vqav2"
    for value in answers:
        if want_list != (isinstance(value, list) and all(isinstance(answer, str) for answer in value)):
            kind = "a list of answer strings" if want_list else "one answer string"
            raise ValueError(f"--benchmark {benchmark} needs {kind} per row in column {column!r}, got {value!r}")


def run_reconstruction(args: argparse.Namespace) -> int:
    from diffusers import DPMSolverMultistepScheduler
    from transformers import CLIPModel

    from ..dataset_tokenization import distributed_state
    from ..evaluation.data import load_evaluation_data
    from ..evaluation.runner import predict_resumable
    from ..pipeline_seed_decode import SeedDecodePipeline

    _check_positive(args, "batch_size", "steps")
    data = load_evaluation_data(
        args.dataset, args.split, args.image_column, {}, args.id_column, args.annotations
    ).head(args.num_samples)
    pipeline_path = resolve_pretrained_path(args.pipeline, "SeedDecodePipeline")
    clip_path = resolve_pretrained_path(args.clip)
    state = distributed_state(args.device, timeout=BARRIER_TIMEOUT)
    try:
        device, dtype = _device(args, state), getattr(torch, args.dtype)
        with loading(pipeline_path):
            pipe = SeedDecodePipeline.from_pretrained(pipeline_path, dtype=dtype, use_safetensors=True).to(device)
        if args.scheduler == "dpm":
            pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        with loading(clip_path):
            clip_model = CLIPModel.from_pretrained(clip_path, dtype=dtype, use_safetensors=True).to(device).eval()
        clip_processor = AutoImageProcessor.from_pretrained(clip_path)

        def predict(indices: list[int]) -> list[dict]:
            images = [data.image(index) for index in indices]
            output = pipe(
                image=images,
                num_inference_steps=args.steps,
                guidance_scale=args.guidance,
                # One generator per picture, each seeded alike: a picture does not depend on its batch.
                generator=[torch.Generator().manual_seed(args.seed) for _ in indices],
            )
            similarities = clip_image_similarity(clip_model, clip_processor, images, output.images)
            return [
                {"codes": codes, "clip_similarity": similarity}
                for codes, similarity in zip(output.codes.tolist(), similarities)
            ]

        settings = {
            **_data_settings(args, data),
            "pipeline": str(args.pipeline),
            "clip": str(args.clip),
            "steps": args.steps,
            "guidance": args.guidance,
            "scheduler": args.scheduler,
            "seed": args.seed,
        }
        records = predict_resumable(
            data.ids, predict, args.output_dir, settings, args.batch_size, args.overwrite, state, "reconstructing"
        )
        codebook_size = pipe.vision_tokenizer.config.codebook_size
    finally:
        state.destroy_process_group()
    if records is None:
        return 0
    similarity = sum(record["clip_similarity"] for record in records) / len(records)
    usage = codebook_usage([record["codes"] for record in records], codebook_size)
    return _report(args, data, {"CLIP similarity": similarity, **usage})


def _report(args: argparse.Namespace, data, metrics: dict[str, float], note: str = "", skipped=None) -> int:
    """Write metrics.json and metrics.md, and print the table."""
    from ..evaluation.runner import write_metrics

    anchors = ANCHORS[args.task][args.benchmark]
    report = {"task": args.task, "dataset": args.dataset, "benchmark": args.benchmark, "items": len(data.ids)}
    report["metrics"] = metrics
    if skipped:
        report["skipped"] = skipped
    write_metrics(args.output_dir, report, anchors, note)
    print((Path(args.output_dir) / "metrics.md").read_text(), end="")
    print(f"wrote {Path(args.output_dir) / 'predictions.jsonl'} and the metrics beside it")
    return 0
