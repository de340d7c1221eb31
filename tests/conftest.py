"""Shared fixtures: real images from ../shared, skipped with a reason where it is absent.

``kodak`` (and ``kodim``) fall back to synthetic stand-ins (tests/synthetic.py) when ../shared
lacks the Kodak images, so the machinery tests run on any clone; tests whose numbers need the
real photographs ask for ``real_kodak`` instead, which skips there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from synthetic import write_synthetic_kodak

from bench.images import read_rgb8

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BENCH_SHARED", ROOT.parent / "shared"))
KODAK = SHARED / "datasets" / "kodak"


def has_real_kodak() -> bool:
    return (KODAK / "kodim01.png").is_file()


def kodak_dir() -> Path:
    """The real Kodak directory; skips the calling test where ../shared lacks it."""
    if not has_real_kodak():
        pytest.skip(f"the Kodak images are not in {KODAK} (../shared is absent)")
    return KODAK


@pytest.fixture(scope="session")
def real_kodak() -> Path:
    """The directory of the 24 real Kodak PNGs, for numbers that need the photographs."""
    return kodak_dir()


@pytest.fixture(scope="session")
def kodak(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of ``kodim01.png`` ... ``kodim24.png`` at Kodak's sizes: the real ones from
    ../shared where present, else deterministic synthetic stand-ins (same names and sizes)."""
    if has_real_kodak():
        return KODAK
    return write_synthetic_kodak(tmp_path_factory.mktemp("synthetic-kodak"))


@pytest.fixture(scope="session")
def kodim(kodak: Path):
    """Load a Kodak image by number as (H, W, 3) uint8."""
    cache: dict[int, np.ndarray] = {}

    def load(number: int) -> np.ndarray:
        if number not in cache:
            cache[number] = read_rgb8(kodak / f"kodim{number:02d}.png").pixels
        return cache[number]

    return load


def has_program(name: str) -> bool:
    return shutil.which(name) is not None or bool(os.environ.get(f"BENCH_{name.upper()}"))


CITYSCAPES = SHARED / "datasets" / "cityscapes"
CLIC = SHARED / "datasets" / "clic"


@pytest.fixture(scope="session")
def cityscapes_root() -> Path:
    if not (CITYSCAPES / "leftImg8bit").is_dir():
        pytest.skip(f"the Cityscapes frames are not in {CITYSCAPES} (../shared is absent)")
    return CITYSCAPES


@pytest.fixture(scope="session")
def clic_dir() -> Path:
    if not any(CLIC.glob("*.png")):
        pytest.skip(f"the CLIC images are not in {CLIC} (../shared is absent)")
    return CLIC


MODELS = SHARED / "models" / "segmentation"
ESPNET_WEIGHTS = MODELS / "espnet" / "espnet_p_2_q_8.pth"


@pytest.fixture(scope="session")
def espnet_weights() -> Path:
    pytest.importorskip("torch")
    if not ESPNET_WEIGHTS.is_file():
        pytest.skip(f"the ESPNet weights are not at {ESPNET_WEIGHTS} (../shared is absent)")
    return ESPNET_WEIGHTS


@pytest.fixture(scope="session")
def segmentation_models() -> Path:
    pytest.importorskip("torch")
    if not MODELS.is_dir():
        pytest.skip(f"the segmentation weights are not in {MODELS} (../shared is absent)")
    return MODELS
