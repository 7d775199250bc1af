import csv
import hashlib
import os
from pathlib import Path

import pytest

from siamdog.cli import main
from siamdog.data.organize import organize
from siamdog.errors import SiamdogError
from tests.conftest import write_image


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def baidu_src(tmp_path) -> Path:
    src = tmp_path / "src"
    for k in range(5):
        write_image(src / f"12_a{k}.jpg", rgb=(200, 0, 0), seed=k, noise=5)
    for k in range(3):
        write_image(src / f"7_b{k}.jpg", rgb=(0, 200, 0))
    write_image(src / "9_only.jpg")
    (src / "README.txt").write_text("not an image")
    (src / "3_text.jpg").write_text("not an image either")
    (src / "3_zero.jpg").write_bytes(b"")
    return src


def test_filename_format(baidu_src, tmp_path):
    before = _tree(baidu_src)
    dst = tmp_path / "dst"
    result = organize(baidu_src, dst, progress=False)
    assert result.classes == ["12", "7", "9"]
    assert (dst / "classes.txt").read_text() == "12\n7\n9\n"
    assert len(list((dst / "valid" / "12").iterdir())) == 1
    assert len(list((dst / "train" / "12").iterdir())) == 4
    assert len(list((dst / "valid" / "7").iterdir())) == 1
    assert not (dst / "valid" / "9").exists() and len(list((dst / "train" / "9").iterdir())) == 1
    assert not (dst / "train" / "3").exists()
    assert result.counts == {"train": 7, "valid": 2}
    rejected = {r["source"]: r["reason"] for r in _rows(dst / "rejected.csv")}
    assert rejected == {
        "README.txt": "no label before '_' in the file name",
        "3_text.jpg": "not a decodable image",
        "3_zero.jpg": "empty file",
    }
    manifest = _rows(dst / "manifest.csv")
    assert len(manifest) == 12
    ok = [r for r in manifest if r["status"] == "ok"]
    assert {(r["source"], r["class"], r["split"]) for r in ok if r["source"] == "9_only.jpg"} == {("9_only.jpg", "9", "train")}
    assert _tree(baidu_src) == before, "sources must not change"
    # Copies are byte-identical.
    copied = dst / ("valid" if any(r["source"] == "12_a0.jpg" and r["split"] == "valid" for r in ok) else "train") / "12" / "12_a0.jpg"
    assert copied.read_bytes() == (baidu_src / "12_a0.jpg").read_bytes()


def test_rerun_is_idempotent_and_completes_an_interrupted_run(baidu_src, tmp_path):
    dst = tmp_path / "dst"
    organize(baidu_src, dst, progress=False)
    first = _tree(dst)
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.jpg")}
    organize(baidu_src, dst, progress=False)
    assert _tree(dst) == first
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.jpg")} == mtimes, "a rerun rewrote finished files"
    # Simulate a kill: one image missing, one half-written temporary left behind.
    victim = next(dst.glob("train/12/*.jpg"))
    victim.unlink()
    (victim.parent / f".tmp-{victim.name}").write_bytes(b"half")
    organize(baidu_src, dst, progress=False)
    assert _tree(dst) == first


def test_other_source_is_refused_unless_forced(baidu_src, tmp_path):
    dst = tmp_path / "dst"
    organize(baidu_src, dst, progress=False)
    other = tmp_path / "other"
    write_image(other / "5_x.jpg")
    write_image(other / "6_y.jpg")
    with pytest.raises(SiamdogError, match="another source"):
        organize(other, dst, progress=False)
    with pytest.raises(SiamdogError, match="another source"):
        organize(baidu_src, dst, valid_fraction=0.5, progress=False)
    organize(other, dst, force=True, progress=False)
    assert (dst / "classes.txt").read_text() == "5\n6\n"
    assert not (dst / "train" / "12").exists()


def test_non_empty_foreign_destination_is_refused(baidu_src, tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "precious.txt").write_text("keep me")
    with pytest.raises(SiamdogError, match="not made by siamdog"):
        organize(baidu_src, dst, progress=False)
    organize(baidu_src, dst, force=True, progress=False)
    assert (dst / "precious.txt").read_text() == "keep me"


def test_kaggle_csv_ids_without_extension(tmp_path):
    src = tmp_path / "train"
    for name in ("aa", "bb", "cc", "dd"):
        write_image(src / f"{name}.jpg")
    write_image(src / "unlisted.jpg")
    labels = tmp_path / "labels.csv"
    labels.write_text("id,breed\naa,pug\nbb,pug\ncc,dingo\ndd,dingo\nghost,pug\n")
    result = organize(src, tmp_path / "dst", labels=labels, progress=False)
    assert result.classes == ["dingo", "pug"]
    assert result.counts == {"train": 2, "valid": 2}
    reasons = {r["source"]: r["reason"] for r in _rows(tmp_path / "dst" / "rejected.csv")}
    assert reasons == {"ghost": "labels file line 6: no such file", "unlisted.jpg": "not in the labels file"}


def test_baidu_txt_labels_and_duplicate_conflicts(tmp_path):
    src = tmp_path / "src"
    for name in ("a", "b", "c", "d"):
        write_image(src / f"{name}.jpg")
    labels = tmp_path / "train.txt"
    labels.write_text("a.jpg 1 x\nb.jpg 1 x\nc.jpg 2 x\nd.jpg 2 x\nd.jpg 3 x\na.jpg 1 x\n")
    result = organize(src, tmp_path / "dst", labels=labels, progress=False)
    assert result.classes == ["1", "2"]
    reasons = {r["source"]: r["reason"] for r in _rows(tmp_path / "dst" / "rejected.csv")}
    assert list(reasons) == ["d.jpg"] and "conflicting labels" in reasons["d.jpg"]


def test_hostile_ids_and_labels_stay_inside_dst(tmp_path):
    src = tmp_path / "deep" / "src"
    write_image(src / "a.jpg")
    write_image(src / "b.jpg")
    write_image(src / "c.jpg")
    outside = tmp_path / "deep" / "evil.jpg"
    write_image(outside)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,breed\na.jpg,../x\nb.jpg,a/b\nc.jpg,CON\n../evil.jpg,pug\n")
    dst = tmp_path / "deep" / "dst"
    before = _tree(tmp_path / "deep")
    result = organize(src, dst, labels=labels, valid_fraction=0, progress=False)
    assert result.classes == ["_CON", "_x", "a_b"]
    after = _tree(tmp_path / "deep")
    new_files = set(after) - set(before)
    assert all(f.startswith("dst" + os.sep) for f in new_files)
    assert {k: v for k, v in after.items() if k in before} == before
    reasons = {r["source"]: r["reason"] for r in _rows(dst / "rejected.csv")}
    assert reasons == {"../evil.jpg": "labels file line 5: no such file"}


@pytest.mark.parametrize("link", ["hard", "sym"])
def test_link_modes(baidu_src, tmp_path, link):
    dst = tmp_path / "dst"
    organize(baidu_src, dst, link=link, progress=False)
    placed = next(dst.glob("train/12/*.jpg"))
    source = baidu_src / placed.name
    if link == "hard":
        assert os.path.samefile(placed, source) and not placed.is_symlink()
    else:
        assert placed.is_symlink() and os.path.realpath(placed) == os.path.realpath(source)
    organize(baidu_src, dst, link=link, progress=False)  # a rerun keeps the links


def test_symlink_leading_outside_src_is_refused(tmp_path):
    src = tmp_path / "src"
    write_image(src / "1_a.jpg")
    write_image(src / "1_b.jpg")
    write_image(tmp_path / "outside.jpg")
    os.symlink(tmp_path / "outside.jpg", src / "1_out.jpg")
    os.symlink(src / "1_a.jpg", src / "1_in.jpg")
    result = organize(src, tmp_path / "dst", progress=False)
    assert dict(result.rejected) == {"1_out.jpg": "symbolic link leading outside the source folder"}
    assert result.counts["train"] + result.counts["valid"] == 3


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert "no such source folder" in _cli_error(capsys, ["organize", str(tmp_path / "missing"), str(tmp_path / "d")])
    (tmp_path / "empty").mkdir()
    assert "no files" in _cli_error(capsys, ["organize", str(tmp_path / "empty"), str(tmp_path / "d")])
    write_image(tmp_path / "nolabel" / "plain.jpg")
    assert "no file has a label" in _cli_error(capsys, ["organize", str(tmp_path / "nolabel"), str(tmp_path / "d")])
    bad = tmp_path / "bad.csv"
    bad.write_text("name_of_file,what\nplain.jpg,pug\n")
    err = _cli_error(capsys, ["organize", str(tmp_path / "nolabel"), str(tmp_path / "d"), "--labels", str(bad)])
    assert "has no id column" in err and "--id-column" in err


def test_cli_organize_prints_a_summary(baidu_src, tmp_path, capsys):
    assert main(["organize", str(baidu_src), str(tmp_path / "dst")]) == 0
    out = capsys.readouterr().out
    assert "7 train + 2 valid images in 3 classes" in out and "3 rejected" in out


def test_a_broken_file_never_takes_a_class_s_only_valid_image(tmp_path):
    # Three classes of 10 good images plus one broken file each: whichever file the split
    # would have drawn, every class keeps a valid image, because only usable files are split.
    src = tmp_path / "src"
    for c in ("1", "2", "3"):
        for k in range(10):
            write_image(src / f"{c}_good{k}.jpg", rgb=(60 * int(c), 0, 0), seed=k, noise=5)
        for name in (f"{c}_broken.jpg", f"{c}_zbroken.jpg", f"{c}_abroken.jpg"):
            (src / name).write_bytes(b"")
    for seed in range(6):
        dst = tmp_path / f"dst{seed}"
        result = organize(src, dst, seed=seed, progress=False)
        assert result.counts == {"train": 27, "valid": 3}, f"seed {seed}"
        for c in ("1", "2", "3"):
            assert len(list((dst / "valid" / c).iterdir())) == 1


def test_test_fraction_makes_a_third_split(baidu_src, tmp_path, capsys):
    dst = tmp_path / "dst"
    assert main(["organize", str(baidu_src), str(dst), "--test-fraction", "0.2"]) == 0
    assert "5 train + 2 valid + 2 test images in 3 classes" in capsys.readouterr().out
    assert {p.parent.name for p in (dst / "test").glob("*/*")} == {"12", "7"}
    splits = {r["source"]: r["split"] for r in _rows(dst / "manifest.csv") if r["status"] == "ok"}
    two_way = organize(baidu_src, tmp_path / "two", progress=False)
    assert two_way.counts == {"train": 7, "valid": 2}
    assert {s for s, split in splits.items() if split == "valid"} == {p.name for p in (tmp_path / "two" / "valid").glob("*/*")}
    assert main(["organize", str(baidu_src), str(tmp_path / "bad"), "--valid-fraction", "0.5", "--test-fraction", "0.5"]) == 2
    assert "leave images to train on" in capsys.readouterr().err


def test_a_tree_already_in_class_folders_is_read_as_is(tmp_path, capsys):
    src = tmp_path / "src"
    for breed, count in (("pug", 4), ("akita", 3)):
        for k in range(count):
            write_image(src / breed / f"img{k}.jpg", rgb=(30 * count, 0, 0), seed=k, noise=5)
    (src / "akita" / "notes.txt").write_text("not an image")
    dst = tmp_path / "dst"
    assert main(["organize", str(src), str(dst)]) == 0
    assert "5 train + 2 valid images in 2 classes; 1 rejected" in capsys.readouterr().out
    assert {p.parent.name for p in dst.glob("*/*/*.jpg")} == {"pug", "akita"}
    assert {p.name for p in dst.glob("*/pug/*.jpg")} == {f"img{k}.jpg" for k in range(4)}
    assert {r["source"]: r["reason"] for r in _rows(dst / "rejected.csv")} == {"akita/notes.txt": "not a decodable image"}
