"""
The demo page as a Hugging Face Space runs it (`python app.py`, Gradio SDK). The models are folders of the Space's
repository or Hub ids, named by the environment (Space variables): SEED_TOKENIZER (default `seed-tokenizer-v1`),
SEED_DECODE (default `seed-decode-v1`) and SEED_OPT (optional; adds Caption / ask and Draw from text).
"""

import os

import torch

from seed_hf.demo import SeedDemo, build_demo

device, dtype = ("cuda", torch.float16) if torch.cuda.is_available() else ("cpu", torch.float32)
demo = build_demo(
    SeedDemo.from_pretrained(
        os.environ.get("SEED_TOKENIZER", "seed-tokenizer-v1"),
        os.environ.get("SEED_DECODE", "seed-decode-v1"),
        os.environ.get("SEED_OPT") or None,
        device=device,
        dtype=dtype,
    )
)

if __name__ == "__main__":
    demo.launch()
