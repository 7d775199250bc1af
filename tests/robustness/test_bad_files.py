"""Hostile files in organize, in training batches, and in evaluate / predict."""

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from siamdog.cli import main
from siamdog.data.batches import DirectoryBatches, PairedBatches
from siamdog.data.images import UnreadableImage, decode_image
from siamdog.data.organize import organize
from tests.robustness.hostile_files import NON_UTF8_NAME, decompression_bomb, make_hostile_folder, refused_files, usable_files


@pytest.fixture
def organized(tmp_path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    make_hostile_folder(src, tmp_path / "outside.jpg")
    dst = tmp_path / "dst"
    organize(src, dst, valid_fraction=0.2, progress=False)
    return src, dst


def _rejected(dst: Path) -> dict[str, str]:
    with open(dst / "rejected.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return {row["source"]: row["reason"] for row in csv.DictReader(f)}


def _manifest(dst: Path) -> list[dict]:
    with open(dst / "manifest.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


def test_organize_uses_every_usable_image_and_lists_the_rest(organized):
    src, dst = organized
    placed = sorted(p.name for p in dst.glob("*/*/*") if p.is_file())
    # Output names are made safe: the undecodable byte of the non-UTF-8 name becomes "_".
    assert placed == sorted([*usable_files(), "2_caf_.jpg"])
    assert os.fsdecode(NON_UTF8_NAME) in {row["source"] for row in _manifest(dst) if row["status"] == "ok"}
    rejected = _rejected(dst)
    for name, (_, reason) in refused_files().items():
        assert reason in rejected.pop(name), name
    assert rejected.pop("3_outside.jpg") == "symbolic link leading outside the source folder"
    assert rejected.pop("3_loop_a.jpg") == rejected.pop("3_loop_b.jpg") == "symbolic link to no file"
    assert rejected == {}
    assert (dst / "classes.txt").read_text().split() == ["1", "2"]


def test_every_placed_image_decodes(organized):
    _, dst = organized
    for path in dst.glob("*/*/*"):
        image = decode_image(path.read_bytes())
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def test_pixel_limit_is_checked_before_decoding_and_configurable(tmp_path):
    with pytest.raises(UnreadableImage, match="decompression bomb|more than the limit"):
        decode_image(decompression_bomb())
    small_bomb = decompression_bomb(3000, 3000)  # 9 Mpx claimed
    with pytest.raises(UnreadableImage, match="3000x3000 pixels, more than the limit of 1000000"):
        decode_image(small_bomb, max_pixels=1_000_000)
    src = tmp_path / "src"
    src.mkdir()
    (src / "1_big.png").write_bytes(small_bomb)
    (src / "1_ok.png").write_bytes(usable_files()["2_ok.jpg"])
    result = organize(src, tmp_path / "dst", max_pixels=1_000_000, progress=False)
    assert "more than the limit" in dict(result.rejected)["1_big.png"]


def test_batches_stay_full_when_files_go_bad_after_organize(organized, caplog):
    _, dst = organized
    for victim in list(dst.glob("train/*/*"))[:3]:
        victim.write_bytes(b"")
    batches = DirectoryBatches(dst / "train", (16, 16), batch_size=4, seed=0)
    paired = PairedBatches(batches, pair_every=2)
    for epoch in range(2):
        sizes = []
        for i in range(len(paired)):
            (x, partner), targets = paired[i]
            assert np.isfinite(x).all() and len(x) == len(partner) == len(targets["bin_out"])
            sizes.append(len(x))
        assert sum(sizes) == batches.samples and all(s == 4 for s in sizes[:-1])
        paired.on_epoch_end()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 3 unreadable image(s)" in warnings[0]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained classifier saved as a run would save it (no training needed to test I/O)."""
    from siamdog.models.backbones import build_tower
    from siamdog.models.siamese import build_model

    run = tmp_path_factory.mktemp("run")
    build_model("softmax", build_tower("xception", "none", 71), 2).image_classifier.save(run / "best.keras")
    (run / "classes.txt").write_text("1\n2\n")
    return run


def test_evaluate_and_predict_skip_bad_files_with_one_warning(tiny_model, tmp_path, capsys, caplog):
    data = tmp_path / "data"
    for name, content in usable_files().items():
        (data / name[0] / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name[0] / name).write_bytes(content)
    for name, (content, _) in refused_files().items():
        (data / "1" / name.replace("3_", "1_")).write_bytes(content)
    assert main(["evaluate", "--model", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("top-1 error: ") and f"images: {len(usable_files())} (4 unreadable skipped)" in out
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"skipped 4 unreadable image(s) of {len(usable_files()) + 4}; first: ")

    flat = tmp_path / "flat"
    flat.mkdir()
    for path in data.rglob("*"):
        if path.is_file():
            (flat / path.name).write_bytes(path.read_bytes())
    assert main(["predict", "--model", str(tiny_model), "--images", str(flat), "--out", str(tmp_path / "sub.txt")]) == 0
    assert len((tmp_path / "sub.txt").read_text().splitlines()) == len(usable_files())
