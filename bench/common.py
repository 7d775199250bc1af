"""What every benchmark records beside its figures: when, where, and with which command."""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import sys
import time
from pathlib import Path

from siamdog.training.hardware import BFLOAT16_CPU_FLAGS, cpu_flags


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # which decides whether bfloat16 pays on the CPU (siamdog.training.hardware)
    bfloat16 = ", ".join(sorted(cpu_flags() & BFLOAT16_CPU_FLAGS)) or "neither amx_bf16 nor avx512_bf16"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPU cores ({cpu}; {bfloat16}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb(children: bool = False) -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def today() -> str:
    return datetime.date.today().isoformat()


def header(name: str) -> dict:
    return {
        "benchmark": name,
        "date": today(),
        "machine": machine(),
        "python": platform.python_version(),
        "command": " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
    }


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "".join("| " + " | ".join(str(cell) for cell in line) + " |\n" for line in lines)


def write_results(out_dir: str | os.PathLike, stem: str, results: dict, title: str, body: str) -> Path:
    """Write `<stem>.json` and `<stem>.md` (title, date, machine, command, then `body`) into
    out_dir, print the markdown, and return the JSON path."""
    markdown = f"# {title} ({results['date']})\n\nMachine: {results['machine']}  \nCommand: `{results['command']}`\n\n{body}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out_dir / f'{stem}.json'}")
    return out_dir / f"{stem}.json"


def images_per_second(run, batch, repeats: int) -> float:
    """Images per second of `run(batch)` over `repeats` calls, after one untimed call (tracing,
    compilation, warm-up)."""
    run(batch)
    started = time.perf_counter()
    for _ in range(repeats):
        run(batch)
    return repeats * len(batch) / (time.perf_counter() - started)


def trained_runs(parser: argparse.ArgumentParser, folders: list[str]) -> list[Path]:
    """The run folders named on the command line, refused in one line unless each holds a
    trained model (best.keras)."""
    runs = [Path(folder) for folder in folders]
    missing = [str(run) for run in runs if not (run / "best.keras").is_file()]
    if missing:
        parser.error(f"not a trained run folder (no best.keras): {', '.join(missing)}")
    return runs
