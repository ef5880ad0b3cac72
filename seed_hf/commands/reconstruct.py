"""`seed-hf reconstruct`: images -> SEED codes -> pictures drawn back from the codes, one PNG per input."""

import argparse
import sys
from functools import partial
from pathlib import Path

import PIL.Image
import torch

from ..utils import write_atomic
from . import loading, resolve_pretrained_path


def register(subparsers) -> None:
    parser = subparsers.add_parser("reconstruct", description=__doc__)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="images to reconstruct")
    parser.add_argument("--pipeline", required=True, help="SeedDecodePipeline folder or Hub repo id")
    parser.add_argument("-o", "--output-dir", required=True, help="folder for the PNGs (IMAGE's name, .png)")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial noise, the same for every image")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="compute dtype")
    parser.add_argument("--overwrite", action="store_true", help="replace existing PNGs")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output_dir = Path(args.output_dir)
    targets = [output_dir / f"{Path(path).stem}.png" for path in args.images]
    clashes = sorted({str(target) for target in targets if targets.count(target) > 1})
    if clashes:
        raise ValueError(f"several inputs would write {', '.join(clashes)}")
    existing = [str(target) for target in targets if target.exists()]
    if existing and not args.overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist; pass --overwrite to replace them")
    pipeline = resolve_pretrained_path(args.pipeline, "SeedDecodePipeline")

    from ..pipeline_seed_decode import SeedDecodePipeline  # diffusers: imported once the arguments are checked

    with loading(pipeline):
        pipe = SeedDecodePipeline.from_pretrained(pipeline, dtype=getattr(torch, args.dtype), use_safetensors=True)
    pipe.to(args.device)
    output_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path, target in zip(args.images, targets):
        try:
            with PIL.Image.open(path) as opened:
                output = pipe(
                    image=opened.copy(),
                    num_inference_steps=args.steps,
                    guidance_scale=args.guidance,
                    generator=torch.Generator().manual_seed(args.seed),
                )
        except (OSError, ValueError) as error:
            print(f"error: cannot reconstruct {path}: {error}", file=sys.stderr)
            failed += 1
            continue
        write_atomic(target, partial(output.images[0].save, format="PNG"))
        print(f"{path}: {' '.join(str(code) for code in output.codes[0].tolist())}")
        print(f"wrote {target}")
    if failed:
        print(f"{failed} of {len(targets)} images could not be reconstructed", file=sys.stderr)
    return 1 if failed else 0
