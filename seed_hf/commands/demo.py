"""`seed-hf demo`: serve the demo page (Gradio) for a SEED tokenizer, a decode pipeline and optionally SEED-OPT."""

import argparse

from . import resolve_pretrained_path


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", description=__doc__)
    parser.add_argument("--tokenizer", required=True, help="SEED tokenizer folder (with its image processor)")
    parser.add_argument("--decode", required=True, help="SeedDecodePipeline folder")
    parser.add_argument("--seed-opt", help="SEED-OPT folder (model and processor): adds Caption / ask, Draw from text")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model dtype")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps the page starts with (default 50)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    tokenizer = resolve_pretrained_path(args.tokenizer, "seed_vision_tokenizer")
    decode = resolve_pretrained_path(args.decode, "SeedDecodePipeline")
    seed_opt = resolve_pretrained_path(args.seed_opt, "seed_opt") if args.seed_opt is not None else None
    if not 1 <= args.steps <= 100:
        raise ValueError(f"--steps must be in [1, 100], got {args.steps}")
    try:
        import gradio  # noqa: F401 (checked before the models load)
    except ImportError as error:
        raise ModuleNotFoundError("seed-hf demo needs gradio: pip install 'seed_hf[demo]'") from error
    import torch

    from ..demo import SeedDemo, build_demo

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    demo = SeedDemo.from_pretrained(tokenizer, decode, seed_opt, device=device, dtype=getattr(torch, args.dtype))
    build_demo(demo, default_steps=args.steps).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0
