"""Input checks (issue 14, item 8): values that used to be silently misread are usage errors
(exit 2) naming the value."""

from __future__ import annotations

import pytest

from bench.cli import main
from bench.codecs import create_codec
from bench.datasets import open_dataset
from bench.errors import UsageError
from bench.runner import plan_codec, run


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--limit", "0"], "--limit: must be at least 1, got 0"),
        (["--limit", "-1"], "--limit: must be at least 1, got -1"),
        (["--limit", "two"], "--limit: expected a whole number, got 'two'"),
        (["--workers", "-1"], "--workers: must be 0 or more, got -1"),
        (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["--codec-option", "jpeg.optimize=maybe"], "optimize='maybe' must be true or false"),
    ],
)
def test_a_misread_value_is_a_usage_error_naming_it(argv, message, tmp_path, capsys):
    code = None
    try:
        code = main(["run", "--codecs", "jpeg", "--out", str(tmp_path / "run"), *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize(
    ("text", "expected"), [("true", True), ("off", False), ("0", False), ("yes", True)]
)
def test_boolean_options_read_their_spellings(text, expected):
    assert create_codec("jpeg", {"optimize": text}).options["optimize"] is expected
    assert create_codec("webp", {"lossless": text}).options["lossless"] is expected


def test_the_library_refuses_the_same_values(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (90, 120, 150)).save(images / "a.png")
    dataset = open_dataset("folder", {"data_dir": images})
    plans = [plan_codec("jpeg", rates=[50])]
    with pytest.raises(UsageError, match="limit must be at least 1 image, got 0"):
        run(dataset, plans, tmp_path / "a", limit=0)
    with pytest.raises(UsageError, match="workers must be 0"):
        run(dataset, plans, tmp_path / "b", workers=-2)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_out_that_is_a_file_or_cannot_be_made_is_a_usage_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for out, message in (
        (blocker, "is a file, not a directory"),
        (blocker / "below", "cannot be created"),
    ):
        assert main(["run", "--codecs", "jpeg", "--limit", "1", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_a_full_disk_stops_the_run_with_one_line_and_resume_completes_it(
    tmp_path, capsys, monkeypatch
):
    import errno
    import json

    from PIL import Image

    from bench.records import read_csv
    from bench.store import RunStore

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (48, 40), (40 * i, 90, 150)).save(images / f"im{i}.png")
    argv = ["run", "--codecs", "jpeg", "--rates", "jpeg=30,70", "--dataset", "folder",
            "--data-dir", str(images), "--workers", "0"]  # fmt: skip
    add = RunStore.add
    calls = {"n": 0}

    def fills_up(self, records):  # the second job finds the disk full
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.csv_path))
        add(self, records)

    monkeypatch.setattr(RunStore, "add", fills_up)
    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert len(read_csv(out / "records.csv")) == 2  # the first job's records are kept
    monkeypatch.setattr(RunStore, "add", add)
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert main([*argv, "--out", str(tmp_path / "clean")]) == 0

    def table(directory):
        return sorted((r.image_id, r.rate, r.sha256, r.psnr_rgb) for r in read_csv(directory))

    assert table(out / "records.csv") == table(tmp_path / "clean" / "records.csv")
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
