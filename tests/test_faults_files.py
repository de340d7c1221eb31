"""Damaged files: a half-written records.csv tail, a truncated baseline."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import EXIT_OK, EXIT_USAGE, main
from bench.datasets import open_dataset
from bench.outputs import write_run_outputs
from bench.records import read_csv
from bench.runner import plan_codec, run


def _images(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:64, 0:96]
    for i in range(4):
        red = (x * 2 + i * 20) % 256
        green = (y * 3 + i * 10) % 256
        blue = ((x + y) + i * 30) % 256
        image = np.stack([red, green, blue], axis=-1).astype(np.uint8)
        Image.fromarray(image).save(directory / f"img{i}.png")
    return directory


def _sweep(data: Path, out: Path, *, resume: bool = False) -> None:
    dataset = open_dataset("folder", {"data_dir": data})
    run(
        dataset, [plan_codec("jpeg", rates=[20, 60])], out, workers=0, resume=resume,
        finish=write_run_outputs,
    )  # fmt: skip


def _ids(path: Path) -> list[tuple[str, str, float, str, float]]:
    return sorted(
        (r.image_id, r.codec, r.rate, r.sha256, float(r.get("psnr_rgb") or 0))  # type: ignore[arg-type]
        for r in read_csv(path)
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return _images(tmp_path_factory.mktemp("faults") / "images")


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "reference"
    _sweep(data, out)
    return out


def _counts(expected: list, found: list) -> tuple[int, int, int, int]:
    keys = [(e[0], e[1], e[2]) for e in found]
    duplicated = len(keys) - len(set(keys))
    lost = len({(e[0], e[1], e[2]) for e in expected} - set(keys))
    return len(expected), len(found), duplicated, lost


def test_a_half_written_last_row_is_set_aside_and_redone(data, reference, tmp_path, caplog):
    out = tmp_path / "run"
    _sweep(data, out)
    path = out / "records.csv"
    text = path.read_text()
    last = text.rstrip("\n").rfind("\n") + 1
    cut = last + (len(text) - last) // 2
    path.write_text(text[:cut])
    # Readers tolerate the damaged tail (skip + warn) and never modify the directory.
    with caplog.at_level(logging.WARNING):
        records = read_csv(path)
    assert len(records) == 7
    assert "damaged" in caplog.text and "records.csv" in caplog.text
    assert path.read_text() == text[:cut]
    assert not (out / "records.damaged.csv").exists()
    assert main(["curves", str(out)]) == EXIT_OK
    assert path.read_text() == text[:cut]
    from bench.report.rundir import load_run

    assert len(load_run(out).records) == 7
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        _sweep(data, out, resume=True)
    assert "records.damaged.csv" in caplog.text
    with (out / "records.damaged.csv").open(newline="") as handle:
        damaged = list(csv.DictReader(handle))
    assert [d["row"] for d in damaged] == [text[last:cut]]
    assert damaged[0]["line"] == "9" and "fields" in damaged[0]["why"]
    expected, found = _ids(reference / "records.csv"), _ids(path)
    assert found == expected
    assert _counts(expected, found) == (8, 8, 0, 0)
    assert main(["curves", str(out)]) == EXIT_OK


def test_a_complete_last_row_without_its_line_end(data, reference, tmp_path):
    out = tmp_path / "run"
    _sweep(data, out)
    path = out / "records.csv"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    # Drop the last record and the line end of the one before: a resume redoes the dropped
    # one and must append it on a fresh line.
    path.write_text("".join(lines[:-1]).rstrip("\r\n"))
    _sweep(data, out, resume=True)
    expected, found = _ids(reference / "records.csv"), _ids(path)
    assert found == expected
    assert _counts(expected, found) == (8, 8, 0, 0)
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert len({len(r) for r in rows}) == 1
    assert not (out / "records.damaged.csv").exists()


def test_a_row_with_the_wrong_number_of_fields_is_set_aside(data, reference, tmp_path):
    out = tmp_path / "run"
    _sweep(data, out)
    path = out / "records.csv"
    text = path.read_text()
    # Cut the last row just after a comma: it still parses, but lacks fields.
    last = text.rstrip("\n").rfind("\n") + 1
    comma = text.index(",", last + 5)
    path.write_text(text[: comma + 1])
    assert len(read_csv(path)) == 7
    _sweep(data, out, resume=True)
    expected, found = _ids(reference / "records.csv"), _ids(path)
    assert found == expected
    assert "fields" in (out / "records.damaged.csv").read_text()


@pytest.fixture(scope="module")
def baseline(reference, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "b.csv"
    assert main(["baseline", str(reference), "--out", str(path)]) == EXIT_OK
    return path


def _cut_in(baseline: Path, tmp_path: Path, kind: str) -> tuple[Path, int]:
    lines = baseline.read_text().splitlines(keepends=True)
    index = max(i for i, line in enumerate(lines) if line.startswith(kind + ","))
    line = lines[index]
    cut = tmp_path / f"cut-{kind}.csv"
    cut.write_text("".join(lines[:index]) + line[: len(line) // 2])
    return cut, index + 1


@pytest.mark.parametrize("kind", ["point", "image"])
def test_a_truncated_baseline_is_a_usage_error(reference, baseline, tmp_path, capsys, kind):
    assert main(["check", str(reference), "--baseline", str(baseline)]) == EXIT_OK
    cut, number = _cut_in(baseline, tmp_path, kind)
    capsys.readouterr()
    assert main(["check", str(reference), "--baseline", str(cut)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(cut) in err and f"line {number}" in err


@pytest.mark.parametrize(
    "change",
    [
        ("point", 7, "abc"),  # a non-numeric aggregate
        ("image", 5, "deadbeef"),  # a digest that is not 64 hex characters
        ("point", 5, "xyz"),  # a point digest that is not 64 hex characters
    ],
)
def test_a_malformed_baseline_row_is_a_usage_error(reference, baseline, tmp_path, capsys, change):
    kind, column, value = change
    lines = baseline.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if line.startswith(kind + ","))
    cells = lines[index].rstrip("\n").split(",")
    cells[column] = value
    lines[index] = ",".join(cells) + "\n"
    bad = tmp_path / "bad.csv"
    bad.write_text("".join(lines))
    assert main(["check", str(reference), "--baseline", str(bad)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert str(bad) in err and f"line {index + 1}" in err
