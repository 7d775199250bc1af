import pytest

from siamdog.data.labels import (
    detect_labels_format,
    label_from_filename,
    match_folders,
    parse_class_map,
    parse_labels_csv,
    parse_labels_txt,
    safe_name,
)
from siamdog.errors import SiamdogError


@pytest.mark.parametrize(
    "name, label",
    [
        ("12_abc.jpg", "12"),
        ("12_abc_def.jpeg", "12"),
        ("golden_x.png", "golden"),
        ("noseparator.jpg", None),
        ("_leading.jpg", None),
        ("12_", "12"),
    ],
)
def test_label_from_filename(name, label):
    assert label_from_filename(name) == label


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("golden_retriever", "golden_retriever"),
        ("  Pug  ", "Pug"),
        ("../x", "_x"),
        ("../../etc", "_.._etc"),
        ("a/b", "a_b"),
        ("a\\b", "a_b"),
        ("..", ""),
        (".", ""),
        ("", ""),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("Bichon Frisé", "Bichon Frisé"),
        ("tab\there", "tab_here"),
    ],
)
def test_safe_name_stays_one_path_component(raw, expected):
    assert safe_name(raw) == expected
    assert "/" not in safe_name(raw) and "\\" not in safe_name(raw)


def test_parse_kaggle_csv_with_bom_and_crlf():
    text = "\ufeffid,breed\r\nabc,boston_bull\r\ndef,dingo\r\n\r\n"
    rows = parse_labels_csv(text)
    assert [(r.image, r.label, r.line) for r in rows] == [("abc", "boston_bull", 2), ("def", "dingo", 3)]


def test_parse_csv_finds_columns_by_name_in_any_order_and_ignores_extra_ones():
    rows = parse_labels_csv("width,Label,file\n10, pug ,a.jpg\n")
    assert [(r.image, r.label) for r in rows] == [("a.jpg", "pug")]


def test_parse_csv_with_explicit_columns():
    rows = parse_labels_csv("x,y\na.jpg,pug\n", id_column="x", label_column="y")
    assert [(r.image, r.label) for r in rows] == [("a.jpg", "pug")]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("foo,bar\n1,2\n", "no id column"),
        ("id,bar\n1,2\n", "no label column"),
        ("id,breed\nonlyid\n", "line 2"),
    ],
)
def test_parse_csv_errors(text, message):
    with pytest.raises(SiamdogError, match=message):
        parse_labels_csv(text)


def test_parse_csv_explicit_column_missing():
    with pytest.raises(SiamdogError, match="no column 'kind'"):
        parse_labels_csv("id,breed\n", label_column="kind")


def test_parse_baidu_txt():
    rows = parse_labels_txt("a.jpg 12 extra\n\n# comment\nb.jpg\t7\n")
    assert [(r.image, r.label, r.line) for r in rows] == [("a.jpg", "12", 1), ("b.jpg", "7", 4)]


def test_parse_txt_line_without_label():
    with pytest.raises(SiamdogError, match="line 2"):
        parse_labels_txt("a.jpg 1\nlonely.jpg\n")


def test_detect_labels_format():
    assert detect_labels_format("id,breed", "labels.csv") == "csv"
    assert detect_labels_format("id,breed", "labels") == "csv"
    assert detect_labels_format("a.jpg 12 0", "train.txt") == "txt"


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_semicolon_tab_and_pipe_separated_files_with_a_header_are_read(delimiter):
    header = f"id{delimiter}breed"
    assert detect_labels_format(header, "labels.txt") == "csv"
    rows = parse_labels_csv(f"{header}\na{delimiter}pug\nb{delimiter}great dane\n")
    assert [(r.image, r.label) for r in rows] == [("a", "pug"), ("b", "great dane")]


def test_tab_separated_lines_without_a_header_stay_baidu_lines():
    assert detect_labels_format("a.jpg\t12\t0", "train.txt") == "txt"


def test_a_header_only_tsv_is_one_clear_error(tmp_path):
    from siamdog.data.organize import organize
    from tests.conftest import write_image

    write_image(tmp_path / "src" / "a.jpg")
    (tmp_path / "labels.tsv").write_text("id\tbreed\n")
    with pytest.raises(SiamdogError, match="no label rows"):
        organize(tmp_path / "src", tmp_path / "dst", labels=tmp_path / "labels.tsv", progress=False)


@pytest.mark.parametrize("text", ["golden,12\nbeagle,7\n", "golden;12\nbeagle;7", "golden\t12\n\nbeagle\t7\n", "folder|class\ngolden|12\nbeagle|7"])
def test_a_class_map_reads_two_columns_in_any_delimiter(text):
    mapping = parse_class_map(text)
    assert mapping["golden"] == "12" and mapping["beagle"] == "7"


@pytest.mark.parametrize("text, message", [("", "no mapping lines"), ("a,1\nb\n", "line 2"), ("a,1\na,2\n", "mapped twice"), ("a,1,2", "line 1")])
def test_a_bad_class_map_names_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_class_map(text)


def test_folders_are_matched_through_the_map_or_by_their_own_name():
    folders = ["7", "beagle", "golden", "poodle"]
    known, labels, unknown = match_folders(folders, ["12", "7", "beagle"], {"golden": "12", "folder": "class"})
    assert known == ["7", "beagle", "golden"] and labels == [1, 2, 0] and unknown == ["poodle"]
    with pytest.raises(ValueError, match="99 is not among the model's classes"):
        match_folders(folders, ["12", "7"], {"poodle": "99"})
