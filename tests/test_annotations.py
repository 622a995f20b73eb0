"""Annotation parsing and the box policy (malformed lines, clipping, degenerate boxes, strict)."""

from pathlib import Path

import numpy as np
import pytest

from facecmp.data import read_ground_truth
from facecmp.data.annotations import AnnotationLine, BoxChanges, clip_box, parse_annotation_file
from facecmp.errors import DataError


def write(tmp_path: Path, text: str, name: str = "ann.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_parses_six_column_lines_in_order(tmp_path):
    path = write(tmp_path, "0001.jpg 1 2 30 40 dad\n\n# comment\n0002.jpg 5 6 70 80 unknown\n")
    lines, problems = parse_annotation_file(path)
    assert problems == []
    assert [(e.image, e.box, e.label, e.line) for e in lines] == [
        ("0001.jpg", (1, 2, 30, 40), "dad", 1),
        ("0002.jpg", (5, 6, 70, 80), "unknown", 4),
    ]


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("0001.jpg 1 2 30 dad", "5 columns"),
        ("0001.jpg 1 2 3.5 40 dad", "non-integer"),
        ("0001.jpg 1 2 x 40 dad", "non-integer"),
        ("image_one 1 2 30 40 dad", "not a bare image file name"),
        ("dad/0001.jpg 1 2 30 40 dad", "not a bare image file name"),
    ],
)
def test_malformed_line_is_an_error_with_file_line_and_expected_format(tmp_path, line, fragment):
    path = write(tmp_path, f"0001.jpg 1 2 30 40 dad\n{line}\n")
    lines, problems = parse_annotation_file(path)
    assert len(lines) == 1
    assert len(problems) == 1
    p = problems[0]
    assert (p.file, p.line, p.severity) == (path, 2, "error")
    assert fragment in p.message
    assert "IMAGE X_MIN Y_MIN X_MAX Y_MAX CHARACTER" in p.message
    assert str(p).startswith(f"{path}:2: error:")


def entry(box):
    return AnnotationLine(Path("a.txt"), 7, "0001.jpg", box, "dad")


def clipped(box, size=(100, 80)):
    changes = BoxChanges()
    return clip_box(entry(box), size, changes), changes.problems()


def test_box_inside_is_kept_silently():
    assert clipped((10, 10, 50, 60)) == ((10, 10, 50, 60), [])


def test_box_one_pixel_past_the_border_is_clipped_and_counted_not_silent():
    box, problems = clipped((10, 10, 100, 80))
    assert box == (10, 10, 99, 79)
    [p] = problems
    assert (p.file, p.line, p.severity) == (Path("a.txt"), 7, "warning")
    assert p.message.startswith("1 box(es) end one pixel past the image") and "writes them as labelled" in p.message


def test_box_outside_is_clipped_with_a_warning_naming_both_boxes():
    box, problems = clipped((-5, 10, 150, 60))
    assert box == (0, 10, 99, 60)
    assert len(problems) == 1
    p = problems[0]
    assert (p.line, p.severity) == (7, "warning")
    assert "reach outside the image" in p.message
    assert "[-5, 10, 150, 60]" in p.message and "[0, 10, 99, 60]" in p.message


@pytest.mark.parametrize("box", [(50, 10, 50, 60), (60, 10, 50, 60), (10, 30, 50, 30), (120, 10, 150, 60)])
def test_degenerate_box_is_dropped_with_a_warning(box):
    kept, problems = clipped(box)
    assert kept is None
    assert any("dropped" in p.message and p.severity == "warning" for p in problems)


def test_many_changes_are_one_warning_per_kind_with_the_count_and_the_first_line():
    changes = BoxChanges()
    for line in range(1, 87):
        clip_box(AnnotationLine(Path("dad_annotations.txt"), line, "0001.jpg", (10, 10, 480, 300), "dad"), (480, 360), changes)
    for line in (90, 91):
        clip_box(AnnotationLine(Path("dad_annotations.txt"), line, "0002.jpg", (10, 10, 600, 300), "dad"), (480, 360), changes)
    problems = changes.problems()
    assert [(p.line, p.message.split(" box(es)")[0]) for p in problems] == [(1, "86"), (90, "2")]
    assert "one pixel past" in problems[0].message and "reach outside" in problems[1].message


def test_read_ground_truth_keeps_file_order_and_accepts_5_or_6_columns(tmp_path):
    path = write(tmp_path, "0002.jpg 5 5 20 20\n0001.jpg 1 1 9 9 dad\n0002.jpg 1 1 3 3\n")
    gt, problems = read_ground_truth(path)
    assert problems == []
    assert list(gt) == ["0002.jpg", "0001.jpg"]
    assert gt["0002.jpg"].tolist() == [[5, 5, 20, 20], [1, 1, 3, 3]]
    assert gt["0002.jpg"].dtype == np.int64


def test_read_ground_truth_raises_one_error_listing_every_bad_line(tmp_path):
    bad = "".join(f"{i:04d}.jpg 1 2 x 4\n" for i in range(15))
    path = write(tmp_path, "0001.jpg 1 1 9 9\n" + bad)
    with pytest.raises(DataError) as info:
        read_ground_truth(path)
    message = str(info.value)
    assert "15 error(s)" in message
    assert f"{path}:2:" in message and f"{path}:11:" in message
    assert "and 5 more" in message


def test_warnings_pass_unless_strict(tmp_path):
    path = write(tmp_path, "0001.jpg 5 5 5 9\n0001.jpg 1 1 9 9\n")
    gt, problems = read_ground_truth(path)
    assert gt["0001.jpg"].tolist() == [[1, 1, 9, 9]]
    assert [p.severity for p in problems] == ["warning"]
    with pytest.raises(DataError, match="strict"):
        read_ground_truth(path, strict=True)


def test_missing_ground_truth_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_ground_truth(tmp_path / "nope.txt")
