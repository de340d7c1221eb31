"""Faults of the folder dataset: undecodable file names and stems shared by two files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets import open_dataset
from bench.outputs import write_run_outputs
from bench.records import read_csv
from bench.runner import plan_codec, run


def _smooth(seed: int, size: int = 64) -> np.ndarray:
    """A random-but-smooth RGB image (a coarse noise grid, upscaled bilinearly)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BILINEAR))


def _write(path: Path | bytes, seed: int, fmt: str = "PNG") -> None:
    with open(path, "wb") as f:
        Image.fromarray(_smooth(seed)).save(f, format=fmt)


def _csv_rows(out: Path) -> int:
    with open(out / "records.csv", "rb") as f:
        return sum(1 for _ in f) - 1


def _sweep(data_dir: Path, out: Path, *, resume: bool = False):
    dataset = open_dataset("folder", {"data_dir": data_dir})
    return run(dataset, [plan_codec("jpeg", rates=[50])], out, workers=0, resume=resume)


@pytest.fixture
def undecodable_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    raw = os.fsencode(data)
    try:
        _write(os.path.join(raw, b"a_\xff.png"), 1)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    _write(data / "b.png", 2)
    _write(data / "c.png", 3)
    return data


def test_undecodable_names_get_distinct_valid_text_ids(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    raw = os.fsencode(data)
    try:
        _write(os.path.join(raw, b"a_\xff.png"), 1)
        _write(os.path.join(raw, b"a_\xfe.png"), 2)
        _write(os.path.join(raw, b"sub", b"\xe9t\xe9.png"), 3)  # latin-1 "été"
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    _write(data / "plain.png", 4)
    _write(data / "sub" / "ünïcode.png", 5)
    refs = open_dataset("folder", {"data_dir": data}).refs()
    ids = [r.id for r in refs]
    for image_id in ids:
        image_id.encode("utf-8")  # strict: no surrogate escapes left
    assert len(set(ids)) == len(ids) == 5
    # backslashreplace of the relative path's bytes: reversible, and valid names are unchanged.
    assert set(ids) == {"a_\\xff", "a_\\xfe", "sub/\\xe9t\\xe9", "plain", "sub/ünïcode"}
    for ref in refs:  # the file itself is still reachable
        assert ref.path.is_file()


def test_undecodable_name_is_coded_and_resume_redoes_nothing(undecodable_dir, tmp_path):
    out = tmp_path / "run"
    _sweep(undecodable_dir, out)
    records = read_csv(out / "records.csv")
    assert len(records) == 3
    assert all(r.ok for r in records), [r.error for r in records]
    assert sorted(r.image_id for r in records) == ["a_\\xff", "b", "c"]
    rows = _csv_rows(out)
    assert rows == 3
    _sweep(undecodable_dir, out, resume=True)
    assert _csv_rows(out) == rows
    assert len(read_csv(out / "records.csv")) == 3


def test_same_stem_other_suffix_gets_two_ids(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "x.png", 1)
    _write(data / "x.jpg", 2, "JPEG")
    _write(data / "y.png", 3)
    refs = open_dataset("folder", {"data_dir": data}).refs()
    # Only colliding stems keep their suffix; y keeps the id it always had.
    assert [r.id for r in refs] == ["x.jpg", "x.png", "y"]
    out = tmp_path / "run"
    result = write_run_outputs(_sweep(data, out), report=False)
    records = read_csv(out / "records.csv")
    assert sorted(r.image_id for r in records) == ["x.jpg", "x.png", "y"]
    assert all(r.ok for r in records)
    with open(result.aggregates_csv, newline="") as f:
        aggregates = list(csv.DictReader(f))
    assert len(aggregates) == 1
    assert int(aggregates[0]["n_images"]) == 3
    assert int(aggregates[0]["n_failed"]) == 0


def test_suffixed_id_does_not_collide_with_a_longer_stem(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("x.png", "x.jpg", "x.png.png"):
        _write(data / name, len(name), "JPEG" if name.endswith(".jpg") else "PNG")
    ids = [r.id for r in open_dataset("folder", {"data_dir": data}).refs()]
    assert len(set(ids)) == 3
    assert sorted(ids) == ["x.jpg", "x.png", "x.png.png"]


def test_colliding_stems_share_their_label_map(tmp_path):
    data, labels = tmp_path / "data", tmp_path / "labels"
    (data / "a").mkdir(parents=True)
    (labels / "a").mkdir(parents=True)
    _write(data / "a" / "x.png", 1)
    _write(data / "a" / "x.jpg", 2, "JPEG")
    label = np.zeros((64, 64), dtype=np.uint8)
    label[32:] = 1
    Image.fromarray(label, mode="L").save(labels / "a" / "x.png")
    dataset = open_dataset("folder", {"data_dir": data, "label_dir": labels, "num_classes": 2})
    refs = dataset.refs()
    assert [r.id for r in refs] == ["a/x.jpg", "a/x.png"]
    assert [r.label_path for r in refs] == [labels / "a" / "x.png"] * 2
    for ref in refs:
        sample = dataset.load(ref)
        assert sample.label is not None and np.array_equal(sample.label, label)
    assert dataset.status().labels == 2


def test_unreadable_file_with_undecodable_name_costs_only_its_records(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    try:
        with open(os.path.join(os.fsencode(data), b"bad_\xff.png"), "wb") as f:
            f.write(b"not a png")
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    _write(data / "b.png", 2)
    _sweep(data, tmp_path / "run")
    records = {r.image_id: r for r in read_csv(tmp_path / "run" / "records.csv")}
    assert sorted(records) == ["b", "bad_\\xff"]
    assert records["b"].ok
    assert not records["bad_\\xff"].ok and "bad_\\xff.png" in records["bad_\\xff"].error


def test_an_error_message_naming_an_undecodable_file_is_written(tmp_path):
    """A record whose error names a file by its raw (undecodable) path is still written."""
    from bench.records import Record, read_csv
    from bench.store import RunStore

    store = RunStore(tmp_path / "run")
    store.add([Record("d", "a", status="error", error="cannot read /data/a_\udcff.png")])
    store.close()
    (record,) = read_csv(tmp_path / "run" / "records.csv")
    assert record.error == "cannot read /data/a_\\xff.png"


def test_a_failed_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    from pathlib import Path

    from bench.store import write_atomic

    target = tmp_path / "report.html"
    target.write_text("old")

    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
