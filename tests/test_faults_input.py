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
