"""The pictures a run and an evaluation leave."""

import numpy as np

from siamdog.plots import natural_order, plot_confusion_matrix


def test_confusion_matrix_orders_numeric_ids_as_numbers(tmp_path):
    names = ["63", "7", "a10", "a9", "B"]
    assert [names[i] for i in natural_order(names)] == ["7", "63", "a9", "a10", "B"]
    plot_confusion_matrix(np.arange(25).reshape(5, 5), names, tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 0
