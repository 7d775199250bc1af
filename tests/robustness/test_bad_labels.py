"""Hostile labels files, and property tests: any labels file gives a valid layout or one clear error."""

import csv
import io
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siamdog.data.organize import organize
from siamdog.errors import SiamdogError
from tests.conftest import write_image

IDS = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("src")
    for k, name in enumerate(IDS):
        write_image(folder / f"{name}.jpg", rgb=(30 * k, 100, 200), noise=10, seed=k)
    return folder


def _reasons(dst: Path) -> dict[str, str]:
    with open(dst / "rejected.csv", newline="") as f:
        return {r["source"]: r["reason"] for r in csv.DictReader(f)}


def test_bom_crlf_extra_columns_missing_ids_and_empty_labels(src, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(
        "\ufeffid,breed,source_url\r\na,pug,http://x\r\nb.jpg,pug,\r\nc,dingo,y\r\nd,dingo,z\r\ne,,w\r\nghost,pug,q\r\n".encode()
    )
    result = organize(src, tmp_path / "dst", labels=labels, progress=False)
    assert result.classes == ["dingo", "pug"]
    reasons = _reasons(tmp_path / "dst")
    assert reasons == {
        "e.jpg": "unusable label ''",
        "ghost": "labels file line 7: no such file",
        "f.jpg": "not in the labels file",
    }


def test_duplicate_ids_with_conflicting_labels_are_reported_not_resolved(src, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,breed\na,pug\nb,pug\nc,dingo\nd,dingo\na,dingo\nb,pug\n")
    organize(src, tmp_path / "dst", labels=labels, progress=False)
    reasons = _reasons(tmp_path / "dst")
    assert reasons["a.jpg"] == "conflicting labels 'pug' (line 2) and 'dingo' (line 6)"
    assert "b.jpg" not in reasons, "a repeated identical row is harmless"
    assert not list((tmp_path / "dst").glob("*/*/a.jpg"))


def test_labels_differing_only_in_case_are_refused_before_writing(src, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,breed\na,Pug\nb,pug\nc,dingo\n")
    with pytest.raises(SiamdogError, match="'Pug' and 'pug' would share the class folder"):
        organize(src, tmp_path / "dst", labels=labels, progress=False)
    assert not (tmp_path / "dst").exists()


def test_surrounding_spaces_do_not_make_a_new_class(src, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("id,breed\na,pug\nb, pug \nc,dingo\nd,dingo\n")
    assert organize(src, tmp_path / "dst", labels=labels, progress=False).classes == ["dingo", "pug"]


def test_path_like_and_reserved_labels_become_safe_folders(src, tmp_path):
    labels = tmp_path / "train.txt"
    labels.write_text("a.jpg ../x\nb.jpg a/b\nc.jpg CON\nd.jpg ..\n")
    result = organize(src, tmp_path / "dst", labels=labels, valid_fraction=0, progress=False)
    assert result.classes == ["_CON", "_x", "a_b"]
    assert _reasons(tmp_path / "dst")["d.jpg"] == "unusable label '..'"
    assert sorted(p.name for p in (tmp_path / "dst" / "train").iterdir()) == ["_CON", "_x", "a_b"]


LABEL_TEXT = st.one_of(st.text(alphabet="aAbB ./\\_-é\t\u200b", max_size=6), st.sampled_from(["..", "CON", "con", "../x"]))
ROW = st.tuples(st.sampled_from(IDS + ["a.jpg", "missing", "../a", "a/b", ""]), LABEL_TEXT)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, max_size=10), fraction=st.sampled_from([0.0, 0.1, 0.5]))
def test_any_labels_file_gives_a_valid_layout_or_one_clear_error(src, rows, fraction):
    work = Path(tempfile.mkdtemp())
    try:
        labels = work / "labels.csv"
        buffer = io.StringIO()
        csv.writer(buffer).writerows([("id", "breed"), *rows])
        labels.write_text(buffer.getvalue())
        dst = work / "out" / "dst"
        try:
            result = organize(src, dst, labels=labels, valid_fraction=fraction, progress=False)
        except SiamdogError as e:
            assert "\n" not in str(e)
            assert not dst.exists(), "an error must come before anything is written"
            return
        files = [p for p in work.rglob("*") if p.is_file()]
        assert all(p == labels or dst in p.parents for p in files), "wrote outside DST"
        folders = sorted({p.parent.name for p in dst.glob("*/*/*")})
        assert (dst / "classes.txt").read_text().splitlines() == folders == result.classes
        assert not list(dst.rglob(".tmp-*"))
        for split in ("train", "valid"):
            for folder in (dst / split).glob("*"):
                assert folder.is_dir() and any(folder.iterdir())
        placed = len(list(dst.glob("*/*/*")))
        assert placed == result.counts["train"] + result.counts["valid"]
        with open(dst / "manifest.csv", newline="") as f:
            assert sum(r["status"] == "ok" for r in csv.DictReader(f)) == placed
    finally:
        shutil.rmtree(work)


@settings(max_examples=300, deadline=None)
@given(text=st.lists(st.sampled_from(list('ab,;"\n\r\t \ufeff\x00é') + ["id", "breed", "label"]), max_size=40).map("".join))
def test_label_parsers_return_rows_or_one_clear_error(text):
    from siamdog.data.labels import parse_labels_csv, parse_labels_txt

    for parse in (parse_labels_csv, parse_labels_txt):
        try:
            rows = parse(text)
        except SiamdogError as e:
            assert "\n" not in str(e)
            continue
        assert all(isinstance(r.image, str) and isinstance(r.label, str) and r.line >= 1 for r in rows)
