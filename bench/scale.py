"""How organize and the batch source cope with a large file tree: seconds and peak memory.

    python bench/scale.py --files 200000 --classes 1000      (make bench-scale)

Generates FILES tiny PNG files named <class>_<k>.png in a temporary folder, then measures,
each in its own process so that peak memory is its own: (1) `siamdog organize` (list, label,
split, decode-check every file once, hard-link into train/ and valid/); (2) indexing the
organized train/ folder with DirectoryBatches (listing only, nothing decoded) and running
several epochs of reshuffling plus a few batches, recording memory after each epoch.
Writes bench/results/scale-<date>.json and .md.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import current_rss_mb, header, markdown_table, peak_rss_mb, write_results  # noqa: E402


def make_tree(folder: Path, files: int, classes: int) -> None:
    ok, data = cv2.imencode(".png", np.full((4, 4, 3), 127, np.uint8))
    payload = data.tobytes()
    folder.mkdir(parents=True)
    for k in range(files):
        (folder / f"c{k % classes:04d}_{k:07d}.png").write_bytes(payload)


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Seconds, peak RSS (MB) and stdout of a child Python process."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, peak_rss_mb(children=True), done.stdout


def index_and_epochs(train_dir: str, epochs: int) -> None:
    """Child process: index the folder, then reshuffle and load a few batches per epoch."""
    from siamdog.data.batches import DirectoryBatches

    rss_before = current_rss_mb()  # Keras and its backend are imported by now
    started = time.monotonic()
    batches = DirectoryBatches(train_dir, target_size=(32, 32), batch_size=64, seed=0)
    index_seconds = time.monotonic() - started
    rss = []
    for _ in range(epochs):
        for i in range(3):
            batches[i]
        batches.on_epoch_end()
        rss.append(round(current_rss_mb(), 1))
    print(json.dumps({"samples": batches.samples, "classes": batches.num_classes, "index_seconds": round(index_seconds, 2),
                      "rss_mb_before_index": round(rss_before, 1),
                      "rss_mb_after_each_epoch": rss, "peak_rss_mb": round(peak_rss_mb(), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--child-index", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_index:
        index_and_epochs(args.child_index, args.epochs)
        return

    results = header("scale")
    work = Path(tempfile.mkdtemp(prefix="siamdog-scale-"))
    try:
        started = time.monotonic()
        make_tree(work / "src", args.files, args.classes)
        results["generate_seconds"] = round(time.monotonic() - started, 1)
        seconds, peak, stdout = run_child(["-m", "siamdog.cli", "organize", str(work / "src"), str(work / "dst"), "--link", "hard"])
        results["organize"] = {"files": args.files, "seconds": round(seconds, 1), "peak_rss_mb": round(peak, 1), "summary": stdout.strip().splitlines()[-1]}
        _, _, stdout = run_child([__file__, "--child-index", str(work / "dst" / "train"), "--epochs", str(args.epochs)])
        results["batch_source"] = json.loads(stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    o, b = results["organize"], results["batch_source"]
    body = markdown_table(
        ["step", "files", "seconds", "peak RSS (MB)"],
        [
            ["organize (list, label, split, decode-check, hard-link)", o["files"], o["seconds"], o["peak_rss_mb"]],
            ["batch source: index train/", b["samples"], b["index_seconds"], b["peak_rss_mb"]],
        ],
    ) + (
        f"\nBatch source RSS (MB): {b['rss_mb_before_index']} with Keras imported, before indexing; after each of "
        f"{len(b['rss_mb_after_each_epoch'])} epochs: {', '.join(str(r) for r in b['rss_mb_after_each_epoch'])}\n"
    )
    write_results(args.out, f"scale-{results['date']}", results, "File-tree scale", body)

if __name__ == "__main__":
    main()
