"""Pictures of a run: training curves across stages, a confusion matrix, a learning-rate sweep."""

import csv
import os
import re

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TRAIN_ACCURACY_KEYS = ("ctg_out_1_accuracy", "accuracy")


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a CSVLogger file as floats (empty values become NaN)."""
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]


def plot_training_curves(histories: list[tuple[str, str | os.PathLike]], out_path: str | os.PathLike) -> None:
    """Accuracy and loss per epoch, stages one after another, from (stage, CSV path) pairs."""
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    offset = 0
    for stage, path in histories:
        rows = read_history(path)
        if not rows:
            continue
        epochs = np.arange(offset + 1, offset + len(rows) + 1)
        train_key = next((k for k in TRAIN_ACCURACY_KEYS if k in rows[0]), None)
        if train_key:
            acc_ax.plot(epochs, [r[train_key] for r in rows], "o-", color="tab:blue", ms=3, label="train" if offset == 0 else None)
        acc_ax.plot(epochs, [r.get("val_accuracy", np.nan) for r in rows], "o-", color="tab:orange", ms=3, label="valid" if offset == 0 else None)
        for key, style, label in (("val_classifier_accuracy", "--", "valid, classifier alone"), ("val_auxiliary_accuracy", ":", "valid, auxiliary head alone")):
            if key in rows[0]:  # the two heads of a fused classifier (auxiliary_head)
                acc_ax.plot(epochs, [r[key] for r in rows], style, color="tab:orange", lw=1, label=label if offset == 0 else None)
        loss_ax.plot(epochs, [r.get("loss", np.nan) for r in rows], "o-", color="tab:blue", ms=3, label="train (all heads)" if offset == 0 else None)
        loss_ax.plot(epochs, [r.get("val_loss", np.nan) for r in rows], "o-", color="tab:orange", ms=3, label="valid (classifier)" if offset == 0 else None)
        for ax in (acc_ax, loss_ax):
            ax.axvline(offset + 0.5, color="grey", lw=0.8, ls="--")
            ax.text(offset + 0.6, 1.0, stage, transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")
        offset += len(rows)
    acc_ax.set(title="top-1 accuracy", xlabel="epoch", ylim=(0, 1))
    loss_ax.set(title="loss", xlabel="epoch")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is acc_ax else "upper right")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def natural_order(names: list[str]) -> list[int]:
    """Indices of `names` in natural order: digit runs compare as numbers ("7" before "63")."""
    def key(i: int):
        return [(0, int(part), "") if part.isdigit() else (1, 0, part.casefold()) for part in re.split(r"(\d+)", names[i]) if part]

    return sorted(range(len(names)), key=key)


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], out_path: str | os.PathLike) -> None:
    """Confusion matrix with classes in natural order: colour by the share of each true class's
    images, the image counts written in the cells when they fit (up to 30 classes)."""
    order = natural_order(classes)
    matrix = matrix[np.ix_(order, order)]
    labels = [classes[i] for i in order]
    size = min(max(6, 0.25 * len(labels)), 40)
    fig, ax = plt.subplots(figsize=(size, size))
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 30:
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                ax.text(col, row, str(count), ha="center", va="center", fontsize=8, color="white" if shares[row, col] > 0.5 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted class", ylabel="true class", title="confusion matrix (image counts; colour: share of the true class)")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_learning_rate_sweep(rates, losses, smooth_losses, suggestion: float, stage: str, top: float, out_path: str | os.PathLike) -> None:
    """Training loss against a geometrically growing learning rate (log scale), with the
    suggested rate marked; the loss axis stops at `top`, where the sweep stopped caring."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(rates, losses, color="tab:blue", alpha=0.3, lw=1, label="batch loss")
    ax.plot(rates, smooth_losses, color="tab:blue", lw=2, label="smoothed")
    ax.axvline(suggestion, color="tab:red", ls="--", lw=1, label=f"suggestion {suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title=f"learning-rate sweep, stage {stage}", ylim=(0, top * 1.05))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
