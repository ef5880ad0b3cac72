"""
Start-up time of seed_hf: `import seed_hf` and the `seed-hf` command line's `--help`, against `import transformers`
and the transformers classes seed_hf builds on. Each row is a fresh `python` process; the table gives the median
wall-clock and CPU (user + system) seconds over `--repeats` runs, cold and warm:

- cold: Python compiles every module from source, as on the first run after installing (`-X pycache_prefix`
  pointing at a new empty folder each run); the operating system's file cache is left as it is.
- warm: the bytecode caches are in place, after one untimed run of each row.

    python benchmarks/bench_startup.py
    python benchmarks/bench_startup.py --repeats 10
    python benchmarks/bench_startup.py --repeats 1 --no-cold    # checks that everything runs
"""

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from seed_hf.cli import COMMANDS

# What seed_hf needs from transformers to define and register its classes: the floor of `import seed_hf`.
TRANSFORMERS_CLASSES = "from transformers import Blip2VisionModel, GPT2Tokenizer, OPTModel, Pipeline, ProcessorMixin"

ROWS = [
    ("python (empty)", ["-c", "pass"]),
    ("import transformers", ["-c", "import transformers"]),
    ("import transformers + the classes seed_hf builds on", ["-c", TRANSFORMERS_CLASSES]),
    ("import seed_hf", ["-c", "import seed_hf"]),
    ("seed-hf --help", ["-m", "seed_hf.cli", "--help"]),
    *((f"seed-hf {name} --help", ["-m", "seed_hf.cli", name, "--help"]) for name in COMMANDS),
]


def run_once(arguments: list[str], cold: bool) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one `python ARGUMENTS` process (CPU: its user + system time)."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-pycache-") as pycache:
        command = [sys.executable, *(["-X", f"pycache_prefix={pycache}"] if cold else []), *arguments]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(repeats: int, cold: bool) -> dict[str, tuple[float, float]]:
    """Median wall-clock and CPU seconds per row; the rows take turns so that a change in load touches them all."""
    if not cold:
        for _, arguments in ROWS:
            run_once(arguments, cold=False)
    times = {label: [] for label, _ in ROWS}
    for _ in range(repeats):
        for label, arguments in ROWS:
            times[label].append(run_once(arguments, cold))
    return {
        label: (statistics.median(wall for wall, _ in runs), statistics.median(cpu for _, cpu in runs))
        for label, runs in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="runs per row and setting (default 5)")
    parser.add_argument("--no-cold", dest="cold", action="store_false", help="measure warm start-up only")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch
    import transformers

    settings = {"warm": measure(args.repeats, cold=False)}
    if args.cold:
        settings = {"cold": measure(args.repeats, cold=True), **settings}
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}; median of {args.repeats} runs\n"
    )
    header = " | ".join(f"{name} wall s | {name} CPU s" for name in settings)
    print(f"| fresh process | {header} |")
    print("| --- |" + " ---: |" * (2 * len(settings)))
    for label, _ in ROWS:
        cells = " | ".join(f"{times[label][0]:.2f} | {times[label][1]:.2f}" for times in settings.values())
        print(f"| {label} | {cells} |")


if __name__ == "__main__":
    main()
