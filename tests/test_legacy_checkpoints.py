"""Checkpoints and bitstreams made by an earlier bench still decode to the same pixels.

``tests/fixtures/legacy/`` was made once by ``make_fixtures.py`` (there) with the code of
commit 699593f, before the learned codecs became packages: a ``gan`` checkpoint (with an
entropy model) and a ``tic`` checkpoint of random weights in their ``bench-gan-1`` and
``bench-tic-1`` formats (stored xz-compressed), bitstreams of a synthetic 64x64 image, and the
SHA-256 of the decoded pixels. This test uses only the codec registry, so it ran unchanged
before the refactor too.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from bench.codecs import create_codec  # noqa: E402

LEGACY = Path(__file__).parent / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoints, unpacked byte for byte."""
    folder = tmp_path_factory.mktemp("legacy")
    for name in ("gan.pt", "tic.pt"):
        with lzma.open(LEGACY / f"{name}.xz") as packed, (folder / name).open("wb") as out:
            shutil.copyfileobj(packed, out)
    return folder


@pytest.mark.parametrize("stream", sorted(EXPECTED))
def test_a_legacy_bitstream_decodes_to_the_same_pixels(stream: str, checkpoints: Path) -> None:
    expected = EXPECTED[stream]
    checkpoint = checkpoints / expected["checkpoint"]
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["format"] == f"bench-{expected['codec']}-1"
    codec = create_codec(expected["codec"], {"weights": str(checkpoint)})
    decoded = codec.decode((LEGACY / stream).read_bytes())
    assert list(decoded.shape) == expected["shape"]
    assert hashlib.sha256(np.ascontiguousarray(decoded).tobytes()).hexdigest() == expected["sha256"]


def test_legacy_checkpoints_read_with_the_current_reader(checkpoints: Path) -> None:
    """Where ``bench.weights`` exists (after the refactor), its one reader takes both files."""
    weights = pytest.importorskip("bench.weights")
    for name in ("gan", "tic"):
        loaded = weights.read_checkpoint(checkpoints / f"{name}.pt", name)
        assert loaded["format"] == weights.checkpoint_format(name)
        assert weights.training_record(loaded)["step"] == 0
