"""Data-parallel `bench train` under torchrun: two CPU processes (gloo) train the toy plugin
codec (tests/toy_learned.py); the loss falls, rank 0 alone writes the one checkpoint, a resumed
2-process run ends where an uninterrupted one does, and another world size is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
pytest.importorskip("torch.distributed")

from plugins import install_plugin  # noqa: E402

from bench.cli import main  # noqa: E402
from bench.codecs import CODECS  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.training import TRAINERS, ImageSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOY = {
    "bench.trainers": {"toy": "toy_learned:ToyTraining"},
    "bench.codecs": {"toy": "toy_learned:ToyCodec"},
}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """Four small synthetic images, 32x48: a global batch of 2 processes x 2."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:32, 0:48]
    for i in range(4):
        base = np.stack([x * 5, y * 7, (x + y) * 3 + 40 * i], axis=-1).astype(np.float64)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"im{i}.png")
    return folder


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    install_plugin(monkeypatch, tmp_path / "site", TOY, [TRAINERS, CODECS])
    # The children import this checkout's bench (python -m runs them from ROOT).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ["PYTHONPATH"]]))


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node 2 -m bench.cli train toy ARGS`` on the CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "bench.cli", "train", "toy", *args]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_ranks_draw_disjoint_shares_of_the_seeded_global_batch(images: Path) -> None:
    dataset = open_dataset("folder", {"data_dir": str(images)})
    whole = ImageSampler(dataset, crop=(16, 16), batch_size=4, seed=3)
    shares = []
    for rank in range(2):
        sampler = ImageSampler(dataset, crop=(16, 16), batch_size=2, seed=3)
        sampler.shard(rank, 2)
        assert sampler.batches_per_epoch == 1
        shares.append([sampler.next_batch() for _ in range(3)])
        assert sampler.state() == {"epoch": 2, "index": 4}
    for step in range(3):
        expected = whole.next_batch()
        assert torch.equal(torch.cat([shares[0][step], shares[1][step]]), expected)
    with pytest.raises(Exception, match="global batch"):
        ImageSampler(dataset, crop=(16, 16), batch_size=3, seed=3).shard(0, 2)


def test_two_processes_train_save_once_and_resume_as_if_uninterrupted(
    toy: None, images: Path, tmp_path: Path
) -> None:
    common = ["--dataset", "folder", "--data-dir", str(images), "--log-every", "2",
              "--lr", "0.01"]  # fmt: skip
    whole_dir, parts_dir = tmp_path / "whole", tmp_path / "parts"
    whole_dir.mkdir()
    parts_dir.mkdir()
    whole, parts = whole_dir / "toy.pt", parts_dir / "toy.pt"

    done = torchrun(*common, "--steps", "8", "--out", str(whole))
    assert done.stderr.count("bench train toy:") == 1  # the banner, from rank 0 only
    written = sorted(p.name for p in whole_dir.iterdir() if p.suffix != ".lock")
    assert written == ["toy.pt"]  # one checkpoint, and no other rank's temporary file
    saved = torch.load(whole, map_location="cpu", weights_only=True)
    assert saved["training"]["step"] == 8
    assert saved["training"]["world_size"] == 2
    losses = [r["loss"] for r in saved["training"]["losses"]]
    assert len(losses) == 4 and losses[-1] < losses[0]

    torchrun(*common, "--steps", "4", "--out", str(parts))
    done = torchrun(*common, "--steps", "8", "--out", str(parts), "--resume")
    assert done.stderr.count("resuming toy from") == 1
    resumed = torch.load(parts, map_location="cpu", weights_only=True)

    def without_times(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert without_times(resumed["training"]["losses"]) == without_times(
        saved["training"]["losses"]
    )
    assert resumed["training"]["rng"]["sampler"] == saved["training"]["rng"]["sampler"]
    for name, tensor in saved["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name

    # One process cannot continue a two-process run: it says how to.
    assert main(["train", "toy", *common, "--steps", "10", "--out", str(parts), "--resume"]) == 2
    assert torch.load(parts, map_location="cpu", weights_only=True)["training"]["step"] == 8
