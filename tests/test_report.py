"""The evaluation report's rankings (pure numpy) and its page, without a model."""

import numpy as np

from siamdog.report import ReportInputs, ScoredImages, confident_errors, least_likely_labels, most_confused_pairs, write_report
from tests.conftest import write_image


def test_most_confused_pairs_are_the_largest_off_diagonal_cells_largest_first():
    matrix = np.array([[9, 3, 0], [1, 8, 4], [0, 3, 7]])
    assert most_confused_pairs(matrix, k=3) == [(1, 2, 4), (0, 1, 3), (2, 1, 3)]
    assert most_confused_pairs(matrix, k=10) == [(1, 2, 4), (0, 1, 3), (2, 1, 3), (1, 0, 1)], "empty cells are left out"
    assert most_confused_pairs(np.diag([5, 5])) == []


def test_confident_errors_rank_wrong_predictions_by_the_probability_they_were_given():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.95, 0.05], [0.3, 0.7]])
    labels = np.array([0, 0, 1, 1, 1])
    assert confident_errors(probabilities, labels, k=5).tolist() == [3, 1, 2]
    assert confident_errors(probabilities, labels, k=1).tolist() == [3]
    assert confident_errors(probabilities, np.array([0, 1, 0, 0, 1]), k=5).tolist() == []


def test_least_likely_labels_rank_samples_by_the_probability_of_their_given_label():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.95, 0.05]])
    labels = np.array([0, 0, 1, 0])
    assert least_likely_labels(probabilities, labels, k=2).tolist() == [1, 2]
    assert least_likely_labels(probabilities, labels, k=10).tolist() == [1, 2, 0, 3]


def test_the_page_escapes_names_and_embeds_every_thumbnail(tmp_path):
    classes = ["<b>pug</b>", "beagle & co"]
    for k in range(4):
        write_image(tmp_path / "test" / f"dog{k}.png", rgb=(40 * k, 100, 200), size=(30, 20))
    test = ScoredImages(
        root=str(tmp_path / "test"),
        filenames=[f"dog{k}.png" for k in range(4)],
        labels=np.array([0, 0, 1, 1]),
        probabilities=np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]]),
    )
    page_path = tmp_path / "report.html"
    write_report(page_path, ReportInputs(
        title="t", headline=["top-1 error: 0.5000"], classes=classes, matrix=np.array([[1, 1], [1, 1]]),
        precision=np.array([0.5, 0.5]), recall=np.array([0.5, 0.5]), test=test,
    ))
    page = page_path.read_text()
    assert "<b>pug</b>" not in page and "&lt;b&gt;pug&lt;/b&gt;" in page and "beagle &amp; co" in page
    assert page.count('<img class="thumb" src="data:image/jpeg;base64,') == 2, "one thumbnail per wrong image"
    assert page.index("dog1.png") < page.index("dog3.png"), "the most confident error first"
    assert "--train-data" in page, "without training predictions the page says how to get them"
