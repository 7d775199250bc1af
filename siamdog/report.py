"""The evaluation report: one self-contained HTML page (`report.html`) a person reads.

It holds the headline errors, per-class precision and recall, the confusion matrix with
counts, the most confused pairs of classes, a gallery of the most confidently wrong images
(as fastai's `plot_top_losses`), and, when the training images were scored too, the training
images whose given label the model finds least likely: candidates for label errors, ranked
as cleanlab's self-confidence ranking does. Thumbnails are embedded, so the file can be
mailed or archived alone.

The ranking functions are pure numpy; only `write_report` touches files.
"""

import base64
import html
import os
from dataclasses import dataclass

import cv2
import numpy as np

from siamdog.data.images import UnreadableImage, read_image
from siamdog.files import write_bytes
from siamdog.plots import natural_order

THUMBNAIL_PX = 160


def most_confused_pairs(matrix: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The `k` largest off-diagonal cells of a confusion matrix (rows: true class) as
    (true, predicted, count), largest first; ties in row-major order; empty cells left out."""
    off_diagonal = np.array(matrix, dtype=np.int64)
    np.fill_diagonal(off_diagonal, 0)
    flat = np.argsort(-off_diagonal, axis=None, kind="stable")[:k]
    cells = [np.unravel_index(i, off_diagonal.shape) for i in flat]
    return [(int(t), int(p), int(off_diagonal[t, p])) for t, p in cells if off_diagonal[t, p] > 0]


def confident_errors(probabilities: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` wrongly classified samples whose predicted class got the highest
    probability, most confident first."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:k]]


def least_likely_labels(probabilities: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Indices of the `k` samples whose given label has the lowest predicted probability,
    lowest first (cleanlab's self-confidence ranking of label-error candidates)."""
    given = probabilities[np.arange(len(labels)), labels]
    return np.argsort(given, kind="stable")[:k]


@dataclass
class ScoredImages:
    """Images of one folder with their given labels and the model's class probabilities."""

    root: str
    filenames: list[str]
    labels: np.ndarray
    probabilities: np.ndarray


@dataclass
class ReportInputs:
    """Everything the page shows; `training` is None when the training images were not scored."""

    title: str
    headline: list[str]
    classes: list[str]
    matrix: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    test: ScoredImages
    training: ScoredImages | None = None
    gallery_size: int = 24


def thumbnail_uri(path: str, size: int = THUMBNAIL_PX) -> str | None:
    """The image as a JPEG data URI, its longer side `size` pixels; None when unreadable."""
    try:
        image = read_image(path)
    except UnreadableImage:
        return None
    scale = size / max(image.shape[:2])
    height, width = max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale))
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii") if ok else None


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th.name, td.name { text-align: left; }
table.confusion td { min-width: 1.6em; text-align: center; }
.headline { font-size: 1.1em; line-height: 1.6; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; width: 170px; font-size: 0.8em; }
figure img { display: block; max-width: 160px; max-height: 160px; border: 1px solid #999; }
figcaption { overflow-wrap: anywhere; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""


def _cell(value, cls: str = "", title: str = "", style: str = "") -> str:
    attributes = "".join(f' {k}="{html.escape(v)}"' for k, v in (("class", cls), ("title", title), ("style", style)) if v)
    return f"<td{attributes}>{html.escape(str(value))}</td>"


def _per_class_table(inputs: ReportInputs) -> str:
    support = inputs.matrix.sum(axis=1)
    rows = sorted(range(len(inputs.classes)), key=lambda i: (inputs.recall[i], inputs.classes[i]))
    body = "".join(
        f"<tr>{_cell(inputs.classes[i], 'name')}{_cell(f'{inputs.precision[i]:.3f}')}{_cell(f'{inputs.recall[i]:.3f}')}{_cell(int(support[i]))}</tr>"
        for i in rows
    )
    return f'<table class="per-class"><tr><th class="name">class</th><th>precision</th><th>recall</th><th>images</th></tr>{body}</table>'


def _confusion_table(inputs: ReportInputs) -> str:
    order = natural_order(inputs.classes)
    names = [inputs.classes[i] for i in order]
    matrix = inputs.matrix[np.ix_(order, order)]
    totals = np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    header = "".join(f'<th title="{html.escape(name)}">{n + 1}</th>' for n, name in enumerate(names))
    rows = []
    for r, name in enumerate(names):
        cells = "".join(
            _cell(count, title=f"true {names[r]}, predicted {names[c]}", style=f"background: rgba(31, 119, 180, {count / totals[r, 0]:.2f})")
            if count else "<td></td>"
            for c, count in enumerate(matrix[r])
        )
        rows.append(f'<tr><th class="name">{r + 1} {html.escape(name)}</th>{cells}</tr>')
    return f'<table class="confusion"><tr><th class="name">true \\ predicted</th>{header}</tr>{"".join(rows)}</table>'


def _confused_pairs_table(inputs: ReportInputs) -> str:
    support = inputs.matrix.sum(axis=1)
    pairs = most_confused_pairs(inputs.matrix)
    if not pairs:
        return "<p>No image was classified wrongly.</p>"
    body = "".join(
        f"<tr>{_cell(inputs.classes[t], 'name')}{_cell(inputs.classes[p], 'name')}{_cell(n)}{_cell(f'{n / support[t]:.3f}')}</tr>"
        for t, p, n in pairs
    )
    return f'<table class="confused-pairs"><tr><th class="name">true class</th><th class="name">predicted as</th><th>images</th><th>share of the true class</th></tr>{body}</table>'


def _figure(images: ScoredImages, index: int, lines: list[str]) -> str:
    path = os.path.join(images.root, images.filenames[index])
    uri = thumbnail_uri(path)
    picture = f'<img class="thumb" src="{uri}" alt="{html.escape(images.filenames[index])}">' if uri else "<p>(unreadable now)</p>"
    caption = "<br>".join(html.escape(line) for line in [*lines, images.filenames[index]])
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def _error_gallery(inputs: ReportInputs) -> str:
    test = inputs.test
    chosen = confident_errors(test.probabilities, test.labels, inputs.gallery_size)
    if not len(chosen):
        return "<p>No image was classified wrongly.</p>"
    figures = []
    for i in chosen:
        predicted = int(test.probabilities[i].argmax())
        figures.append(_figure(test, i, [
            f"true: {inputs.classes[test.labels[i]]}",
            f"predicted: {inputs.classes[predicted]} ({test.probabilities[i, predicted]:.3f})",
        ]))
    return f'<div class="gallery errors">{"".join(figures)}</div>'


def _label_candidates(inputs: ReportInputs) -> str:
    training = inputs.training
    if training is None:
        return '<p class="note">The training images were not scored; evaluate with <code>--train-data DATA/train</code> to list them.</p>'
    figures = []
    for i in least_likely_labels(training.probabilities, training.labels, inputs.gallery_size):
        given, predicted = int(training.labels[i]), int(training.probabilities[i].argmax())
        figures.append(_figure(training, i, [
            f"given: {inputs.classes[given]} ({training.probabilities[i, given]:.3f})",
            f"model: {inputs.classes[predicted]} ({training.probabilities[i, predicted]:.3f})",
        ]))
    note = (
        f"The {len(figures)} of {len(training.labels)} training images whose given label the model finds least likely, "
        "least likely first. The model was fitted to these labels, so a wrong label that still ranks low is a strong candidate; "
        "look at each before relabelling."
    )
    return f'<p class="note">{note}</p><div class="gallery label-candidates">{"".join(figures)}</div>'


def write_report(path: str | os.PathLike, inputs: ReportInputs) -> None:
    """Write the page to `path` (atomically)."""
    sections = [
        ("Per class (lowest recall first)", _per_class_table(inputs)),
        ("Most confused pairs of classes", _confused_pairs_table(inputs)),
        ("Confusion matrix (image counts; shade: share of the true class)", _confusion_table(inputs)),
        ("Most confidently wrong images", _error_gallery(inputs)),
        ("Training images whose label looks wrong", _label_candidates(inputs)),
    ]
    headline = "<br>".join(html.escape(line) for line in inputs.headline)
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(inputs.title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(inputs.title)}</h1>"
        f'<p class="headline">{headline}</p>{body}</body></html>\n'
    )
    write_bytes(path, page.encode("utf-8"))
