"""Where labels come from: file names, CSV files and whitespace-separated text files.

Pure functions over strings, so they can be tested without touching a disk.
"""

import csv
import io
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePath

from siamdog.errors import SiamdogError

ID_COLUMNS = ("id", "image", "image_id", "file", "filename", "name", "path")
LABEL_COLUMNS = ("breed", "label", "class", "category", "typeid", "type")

# Device names that Windows refuses as file names, whatever the extension.
_RESERVED_NAMES = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_UNSAFE_CHARS = re.compile(r"[^\w.\- +()\[\]]")


@dataclass(frozen=True)
class LabelRow:
    """One row of a labels file: an image reference, its label and the line it came from."""

    image: str
    label: str
    line: int


def label_from_filename(filename: str) -> str | None:
    """The label before the first underscore of `typeid_hash.jpg`, or None if there is none."""
    stem = PurePath(filename).stem
    head, sep, _ = stem.partition("_")
    return head if sep and head.strip() else None


def safe_name(text: str) -> str:
    """A single path component that is safe on every file system, derived from `text`.

    Separators and control characters become `_`, leading and trailing dots and spaces
    go (so `..` and `../x` cannot climb out of a folder), Windows device names get a
    prefix. Returns "" when nothing usable is left.
    """
    name = unicodedata.normalize("NFC", text).strip()
    name = _UNSAFE_CHARS.sub("_", name).strip(" .")
    if name.split(".")[0].upper() in _RESERVED_NAMES:
        name = "_" + name
    return name[:200]


DELIMITERS = ",;\t|"


def sniff_delimiter(first_line: str) -> str:
    """The delimiter of a delimited labels file's header line: comma, semicolon, tab or pipe."""
    try:
        return csv.Sniffer().sniff(first_line, delimiters=DELIMITERS).delimiter
    except csv.Error:
        return ","


def _is_header(first_line: str) -> bool:
    cells = {c.strip().lower() for c in re.split(r"[,;\t|]", first_line)}
    return bool(cells & set(ID_COLUMNS)) and bool(cells & set(LABEL_COLUMNS))


def detect_labels_format(first_line: str, filename: str = "") -> str:
    """'csv' for delimited files with a header: a .csv or .tsv name, a comma in the first line,
    or a first line of known column names split by semicolons, tabs or pipes; else 'txt'
    (Baidu's `<image> <label>` lines, which may be tab-separated too)."""
    if filename.lower().endswith((".csv", ".tsv")) or "," in first_line or _is_header(first_line):
        return "csv"
    return "txt"


def _find_column(header: list[str], wanted: str | None, known: tuple[str, ...], role: str) -> int:
    lowered = [h.strip().lower() for h in header]
    shown = ", ".join(repr(h.strip()) for h in header)  # repr: a cell may hold a line break
    if wanted is not None:
        if wanted.strip().lower() not in lowered:
            raise SiamdogError(f"labels file has no column {wanted!r} (columns: {shown})")
        return lowered.index(wanted.strip().lower())
    for name in known:
        if name in lowered:
            return lowered.index(name)
    raise SiamdogError(
        f"labels file has no {role} column (columns: {shown}; looked for: "
        f"{', '.join(known)}); name it with --{role}-column"
    )


def parse_labels_csv(text: str, id_column: str | None = None, label_column: str | None = None) -> list[LabelRow]:
    """Rows of a delimited labels file with a header, such as Kaggle's `id,breed` (the
    delimiter, comma, semicolon, tab or pipe, is read off the header line)."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    reader = csv.reader(io.StringIO(text), delimiter=sniff_delimiter(text.partition("\n")[0]))
    try:
        header = next(reader, None)
        if not header:
            raise SiamdogError("labels file is empty")
        id_idx = _find_column(header, id_column, ID_COLUMNS, "id")
        label_idx = _find_column(header, label_column, LABEL_COLUMNS, "label")
        rows = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(fields) <= max(id_idx, label_idx):
                raise SiamdogError(f"labels file line {reader.line_num}: expected {len(header)} columns, found {len(fields)}")
            rows.append(LabelRow(fields[id_idx].strip(), fields[label_idx].strip(), reader.line_num))
    except csv.Error as e:
        raise SiamdogError(f"labels file line {reader.line_num}: not valid CSV ({e})") from None
    return rows


def parse_labels_txt(text: str) -> list[LabelRow]:
    """Rows of a whitespace-separated labels file (Baidu's `<image> <label> ...`)."""
    rows = []
    for line, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        fields = raw.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2:
            raise SiamdogError(f"labels file line {line}: expected '<image> <label>', found {raw.strip()!r}")
        rows.append(LabelRow(fields[0], fields[1], line))
    return rows


def parse_class_map(text: str) -> dict[str, str]:
    """A folder name -> model class mapping from two-column lines (`folder,class`; comma,
    semicolon, tab or pipe). A header line does no harm: only folders that exist are looked up.

    For scoring a test tree whose folder names differ from the model's classes (breed names
    against numeric type ids). Raises ValueError, naming the line, for a line without two
    cells or a folder mapped twice.
    """
    lines = [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError("no mapping lines")
    delimiter = sniff_delimiter(lines[0][1])
    mapping: dict[str, str] = {}
    for number, line in lines:
        cells = [c.strip() for c in next(csv.reader([line], delimiter=delimiter))]
        if len(cells) != 2 or not all(cells):
            raise ValueError(f"line {number}: expected two cells, folder{delimiter}class, got {line.strip()!r}")
        folder, name = cells
        if folder in mapping:
            raise ValueError(f"line {number}: folder {folder!r} is mapped twice")
        mapping[folder] = name
    return mapping


def read_class_map(path: str) -> dict[str, str]:
    """parse_class_map of the file at `path`, with a one-line error naming it."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return parse_class_map(f.read())
    except (OSError, UnicodeDecodeError) as e:
        raise SiamdogError(f"{path}: cannot read the class map ({getattr(e, 'strerror', None) or e})") from None
    except ValueError as e:
        raise SiamdogError(f"{path}: {e}") from None


def match_folders(folders: list[str], classes: list[str], class_map: dict[str, str]) -> tuple[list[str], list[int], list[str]]:
    """The folders to score, each one's class index, and the folders of classes the model does
    not know. A folder is the class `class_map` gives it, or the class of its own name."""
    index = {name: i for i, name in enumerate(classes)}
    wrong = sorted({class_map[f] for f in folders if f in class_map and class_map[f] not in index})
    if wrong:
        raise ValueError(f"{', '.join(wrong[:5])} {'is' if len(wrong) == 1 else 'are'} not among the model's classes")
    names = {f: class_map.get(f, f) for f in folders}
    known = [f for f in folders if names[f] in index]
    return known, [index[names[f]] for f in known], [f for f in folders if names[f] not in index]
