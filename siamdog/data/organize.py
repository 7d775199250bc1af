"""img2keras: turn a folder of labelled photos (flat, or already in class folders) into `train/<class>/`, `valid/<class>/` (and `test/<class>/`).

Sources are never modified, nothing is written outside DST, every image is decoded once to
check it, files are written under a temporary name and renamed, and a rerun on the same
input finishes an interrupted job with the same split.
"""

import csv
import io
import json
import os
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from tqdm import tqdm

from siamdog.data.images import DEFAULT_MAX_PIXELS, UnreadableImage, decode_image
from siamdog.data.labels import (
    detect_labels_format,
    label_from_filename,
    parse_labels_csv,
    parse_labels_txt,
    safe_name,
)
from siamdog.data.split import stratified_split
from siamdog.errors import SiamdogError
from siamdog.files import TEMP_PREFIX, replace_atomically, write_bytes

FORMATS = ("auto", "filename", "folders", "csv", "txt")
LINK_MODES = ("copy", "hard", "sym")
SIGNATURE_FILE = ".siamdog-organize.json"
CHUNK = 256  # files checked and placed per round of the thread pool
_OUTPUTS = ("train", "valid", "test", "classes.txt", "manifest.csv", "rejected.csv", SIGNATURE_FILE)


@dataclass(frozen=True)
class Item:
    """One source file with the class folder it goes to."""

    source: str  # file name inside SRC
    label: str  # class folder name (already made safe)


@dataclass
class OrganizeResult:
    dst: Path
    counts: Counter = field(default_factory=Counter)  # "train" / "valid" / "test" -> images
    classes: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)

    def summary(self) -> str:
        held_out = f" + {self.counts['test']} test" if self.counts["test"] else ""
        text = (
            f"{self.dst}: {self.counts['train']} train + {self.counts['valid']} valid{held_out} images "
            f"in {len(self.classes)} classes"
        )
        if self.rejected:
            text += f"; {len(self.rejected)} rejected (see {self.dst / 'rejected.csv'})"
        return text


def is_class_tree(src: Path) -> bool:
    """True for a source already in class folders: subfolders, and no file directly in it."""
    entries = [e for e in os.scandir(src) if not e.name.startswith(".")]
    folders = [e.is_dir(follow_symlinks=False) for e in entries]
    return any(folders) and all(folders)


def list_source_files(src: Path, nested: bool = False) -> tuple[list[str], list[tuple[str, str]]]:
    """Names of the regular files directly in `src` (with `nested`: in its subfolders, named
    `<folder>/<file>`), and (name, reason) for entries refused because they are links leading
    outside `src` or nowhere."""
    root = os.path.realpath(src)
    folders = [(src, "")]
    if nested:
        folders = [(Path(e.path), f"{e.name}/") for e in sorted(os.scandir(src), key=lambda e: e.name)
                   if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
    names, refused = [], []
    for folder, prefix in folders:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            name = prefix + entry.name
            if entry.is_symlink():
                target = os.path.realpath(entry.path)
                if os.path.commonpath([root, target]) != root:
                    refused.append((name, "symbolic link leading outside the source folder"))
                    continue
                if not os.path.isfile(target):
                    refused.append((name, "symbolic link to no file"))
                    continue
            elif not entry.is_file(follow_symlinks=False):
                continue
            names.append(name)
    return names, refused


def labels_from_filenames(names: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, raw label) from `<label>_<anything>` names, and (name, reason) for the others."""
    labelled, rejected = [], []
    for name in names:
        label = label_from_filename(name)
        if label is None:
            rejected.append((name, "no label before '_' in the file name"))
        else:
            labelled.append((name, label))
    return labelled, rejected


def labels_from_rows(rows, names: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Match labels-file rows to source files by name, or by name without extension.

    Rows naming no file, duplicate ids with conflicting labels, and files no row names are
    returned as (name, reason).
    """
    by_name = {n: n for n in names}
    by_stem: dict[str, str | None] = {}
    for n in names:
        stem = PurePath(n).stem
        by_stem[stem] = None if stem in by_stem else n  # None: ambiguous without extension
    chosen: dict[str, tuple[str, int]] = {}
    conflicts: dict[str, str] = {}
    rejected = []
    for row in rows:
        key = PurePath(row.image.replace("\\", "/")).name
        name = by_name.get(key) or by_stem.get(key)
        if name is None:
            reason = "ambiguous id (several files share this name)" if key in by_stem else "no such file"
            rejected.append((row.image, f"labels file line {row.line}: {reason}"))
            continue
        if name in chosen and chosen[name][0] != row.label:
            conflicts[name] = f"conflicting labels {chosen[name][0]!r} (line {chosen[name][1]}) and {row.label!r} (line {row.line})"
        chosen.setdefault(name, (row.label, row.line))
    rejected += [(name, reason) for name, reason in sorted(conflicts.items())]
    rejected += [(n, "not in the labels file") for n in names if n not in chosen]
    labelled = [(n, label) for n, (label, _) in sorted(chosen.items()) if n not in conflicts]
    return labelled, rejected


def to_items(labelled: list[tuple[str, str]]) -> tuple[list[Item], list[tuple[str, str]]]:
    """Turn raw labels into safe class-folder names; refuse labels that are empty or that
    would share a folder with a different label on a case-insensitive file system."""
    items, rejected = [], []
    first: dict[str, tuple[str, str]] = {}  # case-folded folder -> (folder, the raw label that made it)
    for name, raw in labelled:
        folder = safe_name(raw)
        if not folder:
            rejected.append((name, f"unusable label {raw!r}"))
            continue
        folder, first_raw = first.setdefault(folder.casefold(), (folder, raw))
        if first_raw != raw:
            raise SiamdogError(
                f"labels {first_raw!r} and {raw!r} would share the class folder {folder!r}; "
                "make them identical or clearly different in the labels"
            )
        items.append(Item(name, folder))
    return items, rejected


def resolve_labels(
    src: Path, names: list[str], fmt: str, labels: Path | None, id_column: str | None, label_column: str | None
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, raw label) for every labelled source file, and (name, reason) for the rest."""
    if fmt == "auto":
        fmt = "filename" if labels is None else None
    if fmt == "filename":
        return labels_from_filenames(names)
    if fmt == "folders":
        return [(name, name.partition("/")[0]) for name in names], []
    if labels is None:
        raise SiamdogError(f"format {fmt!r} needs a labels file (--labels)")
    try:
        text = labels.read_bytes().decode("utf-8-sig", errors="replace")
    except OSError as e:
        raise SiamdogError(f"{labels}: cannot read labels file ({e.strerror})") from e
    if fmt is None:
        fmt = detect_labels_format(text.partition("\n")[0], labels.name)
    rows = parse_labels_csv(text, id_column, label_column) if fmt == "csv" else parse_labels_txt(text)
    if not rows:
        raise SiamdogError(f"{labels}: no label rows")
    own = {labels.name} if labels.parent.resolve() == src.resolve() else set()
    return labels_from_rows(rows, [n for n in names if n not in own])


def output_names(items: list[Item]) -> list[str]:
    """A safe, unique file name per item within its class folder."""
    seen: Counter = Counter()
    names = []
    for item in items:
        name = safe_name(PurePath(item.source).name) or "image"
        key = (item.label, name.casefold())
        seen[key] += 1
        if seen[key] > 1:
            stem, ext = os.path.splitext(name)
            name = f"{stem}-{seen[key]}{ext}"
        names.append(name)
    return names


def _place_link(target: Path, source: Path, link: str) -> None:
    def make(tmp):
        if link == "hard":
            os.link(source, tmp)
        else:
            os.symlink(os.path.realpath(source), tmp)

    replace_atomically(target, make)


def _write_csv(path: Path, header: list[str], rows) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes(path, buffer.getvalue().encode("utf-8", "surrogateescape"))


def _check_dst(dst: Path, signature: dict, force: bool) -> None:
    """Refuse a DST that holds something else than an earlier run on the same input."""
    sig_path = dst / SIGNATURE_FILE
    if sig_path.exists():
        try:
            previous = json.loads(sig_path.read_text())
        except (OSError, ValueError):
            previous = None
        if previous == signature:
            return
        if not force:
            raise SiamdogError(f"{dst} was organized from another source or with other settings; use --force to redo it")
    elif dst.exists() and any(dst.iterdir()) and not force:
        raise SiamdogError(f"{dst} is not empty and was not made by siamdog organize; use --force or another folder")
    for name in _OUTPUTS:
        target = dst / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _remove_temporaries(dst: Path) -> None:
    for split in ("train", "valid", "test"):
        for tmp in (dst / split).glob(f"*/{TEMP_PREFIX}*"):
            tmp.unlink()


def _in_chunks(work, indices: list[int], workers: int, what: str, progress: bool) -> list:
    """`work(k)` for every k of `indices` on a thread pool, in chunks so that pending futures
    do not grow with the number of files; results in order."""
    results: list = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, tqdm(
        total=len(indices), desc=f"organize: {what}", unit="img", disable=not progress
    ) as bar:
        for start in range(0, len(indices), CHUNK):
            chunk = indices[start : start + CHUNK]
            results += pool.map(work, chunk)
            bar.update(len(chunk))
    return results


def organize(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    fmt: str = "auto",
    id_column: str | None = None,
    label_column: str | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.0,
    seed: int = 0,
    link: str = "copy",
    force: bool = False,
    workers: int = 4,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = True,
) -> OrganizeResult:
    """Organize SRC into DST (see the module docstring); returns counts and rejections."""
    src, dst = Path(src), Path(dst)
    labels = Path(labels) if labels is not None else None
    if fmt not in FORMATS:
        raise SiamdogError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if link not in LINK_MODES:
        raise SiamdogError(f"unknown link mode {link!r} (choose from {', '.join(LINK_MODES)})")
    if not 0 <= valid_fraction < 1:
        raise SiamdogError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    if not 0 <= test_fraction < 1 or valid_fraction + test_fraction >= 1:
        raise SiamdogError(f"test fraction must be in [0, 1) and leave images to train on beside valid, got {test_fraction}")
    if not src.is_dir():
        raise SiamdogError(f"{src}: no such source folder")
    if dst.resolve() == src.resolve():
        raise SiamdogError("the destination must differ from the source folder")
    if labels is not None and not labels.is_file():
        raise SiamdogError(f"{labels}: no such labels file")

    if fmt == "auto" and labels is None and is_class_tree(src):
        fmt = "folders"
    names, refused = list_source_files(src, nested=fmt == "folders")
    if not names:
        raise SiamdogError(f"{src}: no files in the source folder")
    labelled, rejected = resolve_labels(src, names, fmt, labels, id_column, label_column)
    items, unusable = to_items(labelled)
    rejected = refused + rejected + unusable
    if not items:
        hint = "" if labels is not None else " (name files <label>_<id>.jpg, or give --labels)"
        raise SiamdogError(f"{src}: no file has a label{hint}")

    signature = {
        "source": os.path.realpath(src),
        "labels": os.path.realpath(labels) if labels else None,
        "format": fmt,
        "valid_fraction": valid_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "link": link,
        "id_column": id_column,
        "label_column": label_column,
    }
    _check_dst(dst, signature, force)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / SIGNATURE_FILE).write_text(json.dumps(signature, indent=1))
    _remove_temporaries(dst)

    def check(k: int) -> str | None:
        """Why the k-th image is refused, or None if it decodes."""
        try:
            decode_image((src / items[k].source).read_bytes(), max_pixels)
        except UnreadableImage as e:
            return str(e)
        except OSError as e:
            return e.strerror or str(e)
        return None

    # Split only the usable files, so that a broken file never takes a class's only valid image.
    reasons = _in_chunks(check, list(range(len(items))), workers, "check", progress)
    usable = [k for k, reason in enumerate(reasons) if reason is None]
    splits = [""] * len(items)
    usable_splits = stratified_split([items[k].label for k in usable], [items[k].source for k in usable], valid_fraction, seed, test_fraction)
    for k, split in zip(usable, usable_splits):
        splits[k] = split
    file_names = output_names(items)
    targets = {k: dst / splits[k] / items[k].label / file_names[k] for k in usable}
    for folder in {t.parent for t in targets.values()}:
        folder.mkdir(parents=True, exist_ok=True)

    def place(k: int) -> None:
        source, target = src / items[k].source, targets[k]
        if link == "copy":
            if not (target.is_file() and target.stat().st_size == source.stat().st_size):
                write_bytes(target, source.read_bytes())
        elif not (target.exists() and os.path.samefile(target, source)):
            _place_link(target, source, link)

    _in_chunks(place, usable, workers, "place", progress)

    result = OrganizeResult(dst)
    manifest = [(src_name, "", "", f"rejected: {reason}") for src_name, reason in rejected]
    for item, split, reason in zip(items, splits, reasons):
        if reason is None:
            result.counts[split] += 1
            manifest.append((item.source, item.label, split, "ok"))
        else:
            rejected.append((item.source, reason))
            manifest.append((item.source, item.label, "", f"rejected: {reason}"))
    result.rejected = rejected
    result.classes = sorted({item.label for item, reason in zip(items, reasons) if reason is None})
    _write_csv(dst / "manifest.csv", ["source", "class", "split", "status"], manifest)
    _write_csv(dst / "rejected.csv", ["source", "reason"], rejected)
    write_bytes(dst / "classes.txt", "".join(f"{c}\n" for c in result.classes).encode())
    return result
