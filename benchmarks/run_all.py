"""Run every benchmark (training, maps, segmentation speed and memory, data loading, the VOC-scale
rehearsal, quality) and write benchmarks/RESULTS.md.

Quality is the demo's table: the default benchmark, the default training, every method on val
with predicted labels. Usage:
    .venv/bin/python benchmarks/run_all.py [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")).split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{memory}, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def _run(title: str, command: list[str]) -> str:
    print(f"[run_all] {title}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        return f"## {title}\n\nfailed (exit {result.returncode}):\n\n```\n{result.stderr[-2000:]}\n```\n"
    progress = ("  measured", "[train]", "[demo]")  # per-step progress lines, not results
    table = "\n".join(line for line in result.stdout.splitlines() if not line.startswith(progress))
    shown = " ".join(Path(part).name if part.endswith(".py") else part for part in command[1:])
    return f"## {title}\n\n`{shown}` ({seconds:.0f} s)\n\n{table.strip()}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    python = sys.executable
    sections = [
        _run("Training speed", [python, str(HERE / "train_speed.py")]),
        _run("Training recipe search (from benchmarks/train_recipe.json; rerun with train_recipe.py, ~2 h)",
             [python, str(HERE / "train_recipe.py"), "--table"]),
        _run("Segmentation defaults search and quality on both benchmarks (from benchmarks/segment_defaults.json "
             "and segment_quality.json; rerun with segment_defaults.py search / quality, ~1.5 h)",
             [python, str(HERE / "segment_defaults.py"), "table"]),
        _run("Class-map speed", [python, str(HERE / "maps_speed.py")]),
        _run("Segmentation speed", [python, str(HERE / "segment_speed.py")]),
        _run("Segmentation speed at VOC sizes (every image its own size)",
             [python, str(HERE / "segment_speed.py"), "--voc-sizes", "--methods", "cam,dcsm,dcsm-crf"]),
        _run("Segmentation memory (100 vs 1,000 images)", [python, str(HERE / "segment_memory.py")]),
        _run("Data loading per worker (VOC-sized JPEGs)", [python, str(HERE / "loader_speed.py")]),
        _run("PASCAL VOC-scale rehearsal (full-VOC times extrapolated)", [python, str(HERE / "voc_scale.py")]),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        sections.append(_run("Quality (wsseg demo)", [python, "-m", "wsseg", "demo", "--out", scratch, "--quiet"])
                        .replace(scratch, "DIR"))
    header = (f"# Benchmark results\n\nWritten by `benchmarks/run_all.py` on "
              f"{datetime.date.today().isoformat()}.\n\nMachine: {_machine()}.\n")
    args.out.write_text(header + "\n" + "\n".join(sections))
    print(f"[run_all] wrote {args.out}")


if __name__ == "__main__":
    main()
