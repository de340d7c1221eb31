"""Records tell learned codecs and segmenters apart by their weights' content (issue 23):
another model at the same path is redone, a byte-identical copy at another path is not, and
records of older bench versions (no ``codec_identity``) still read and resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the learned extra is not installed")

from PIL import Image  # noqa: E402

from bench.codecs.learned.gan.checkpoint import save_generator_checkpoint  # noqa: E402
from bench.codecs.learned.gan.config import GanConfig  # noqa: E402
from bench.codecs.learned.gan.model import GanGenerator  # noqa: E402
from bench.datasets import open_dataset  # noqa: E402
from bench.datasets.folder import FolderDataset  # noqa: E402
from bench.download import sha256_of  # noqa: E402
from bench.records import read_csv  # noqa: E402
from bench.registry import Entry  # noqa: E402
from bench.runner import plan_codec, plan_segmenter, run  # noqa: E402
from bench.store import SUPERSEDED_CSV  # noqa: E402
from bench.tasks import SEGMENTERS  # noqa: E402
from bench.tasks.base import TorchSegmenter  # noqa: E402
from bench.tasks.segmentation import SegmentationTask  # noqa: E402

TINY = 1 / 32
RATE = 0.0625  # F=8, L=4


def _checkpoint(path: Path, seed: int, levels: int = 4) -> Path:
    config = GanConfig(bottleneck=8, levels=levels, width=TINY)
    torch.manual_seed(seed)
    return save_generator_checkpoint(path, config, GanGenerator(config))


@pytest.fixture
def images(tmp_path: Path) -> FolderDataset:
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        pixels = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{name}.png")
    return FolderDataset(data_dir=folder)


def _sweep(dataset, weights: Path, out: Path, rates=(RATE,), **kwargs):
    plan = plan_codec("gan", {"weights": str(weights)}, rates=list(rates))
    assert plan.usable, plan.unusable_reason
    jobs: list[int] = []
    result = run(dataset, [plan], out, progress=lambda *_: jobs.append(1), **kwargs)
    return result, len(jobs)


def _digest(record) -> str:
    return json.loads(record.codec_identity)["weights"]


def test_another_model_at_the_same_path_redoes_the_records_of_the_first(images, tmp_path):
    # Before the fix, the first image kept the old model's record beside the new model's.
    weights = _checkpoint(tmp_path / "W.pt", seed=1)
    old = sha256_of(weights)
    first, _ = _sweep(images, weights, tmp_path / "run", limit=1)
    _checkpoint(weights, seed=2)  # another model, same path
    new = sha256_of(weights)
    assert new != old
    second, jobs = _sweep(images, weights, tmp_path / "run", limit=2, resume=True)
    assert jobs == 2  # both images: the first one's record was the old model's
    assert [_digest(r) for r in first.records] == [f"sha256:{old}"]
    assert json.loads(first.records[0].codec_options)["weights"] == str(weights)
    assert {r.image_id: _digest(r) for r in second.records} == {
        "a": f"sha256:{new}",
        "b": f"sha256:{new}",
    }
    assert {_digest(r) for r in read_csv(tmp_path / "run" / "records.csv")} == {f"sha256:{new}"}
    assert [_digest(r) for r in read_csv(tmp_path / "run" / SUPERSEDED_CSV)] == [f"sha256:{old}"]


def test_a_copy_of_the_weights_at_another_path_redoes_nothing(images, tmp_path):
    weights = _checkpoint(tmp_path / "W.pt", seed=1)
    first, _ = _sweep(images, weights, tmp_path / "run")
    copy = tmp_path / "elsewhere" / "copy.pt"
    copy.parent.mkdir()
    shutil.copyfile(weights, copy)
    again, jobs = _sweep(images, copy, tmp_path / "run", resume=True)
    assert jobs == 0
    assert [r.sha256 for r in again.records] == [r.sha256 for r in first.records]
    assert [r.encode_s for r in again.records] == [r.encode_s for r in first.records]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["codecs"]["gan"]["options"]["weights"] == str(copy)


def test_a_directory_redoes_only_the_rate_point_whose_checkpoint_changed(images, tmp_path):
    folder = tmp_path / "w"
    _checkpoint(folder / "f8l2.pt", seed=1, levels=2)  # 0.03125 bpp
    _checkpoint(folder / "f8l4.pt", seed=1)
    first, _ = _sweep(images, folder, tmp_path / "run", rates=(0.03125, RATE), limit=1)
    _checkpoint(folder / "f8l4.pt", seed=3)
    again, jobs = _sweep(
        images, folder, tmp_path / "run", rates=(0.03125, RATE), limit=1, resume=True
    )
    assert jobs == 1
    assert len({r.codec_identity for r in first.records}) == 2
    by_rate = {r.rate: r for r in again.records}
    assert by_rate[0.03125].encode_s == {r.rate: r for r in first.records}[0.03125].encode_s
    assert _digest(by_rate[RATE]) == f"sha256:{sha256_of(folder / 'f8l4.pt')}"


def _strip_identity(path: Path) -> None:
    """Make records.csv look like an older bench version's: no codec_identity column."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [c for c in rows[0] if c != "codec_identity"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_older_records_are_matched_by_the_manifests_hashes(images, tmp_path):
    weights = _checkpoint(tmp_path / "W.pt", seed=1)
    first, _ = _sweep(images, weights, tmp_path / "run", limit=1)
    _strip_identity(tmp_path / "run" / "records.csv")
    assert read_csv(tmp_path / "run" / "records.csv")[0].codec_identity == ""
    again, jobs = _sweep(images, weights, tmp_path / "run", limit=1, resume=True)
    assert jobs == 0  # the manifest's SHA-256 of W.pt matches the file there now
    assert again.records[0].encode_s == first.records[0].encode_s
    assert again.records[0].codec_identity == first.records[0].codec_identity
    stored = read_csv(tmp_path / "run" / "records.csv")
    assert stored[0].codec_identity == first.records[0].codec_identity  # written back
    # An older run whose model was replaced since: its records are redone.
    _strip_identity(tmp_path / "run" / "records.csv")
    _checkpoint(weights, seed=2)
    _, jobs = _sweep(images, weights, tmp_path / "run", limit=1, resume=True)
    assert jobs == 1


def test_classical_codecs_records_have_no_identity_and_resume_as_before(tmp_path, images):
    plan = plan_codec("jpeg", rates=[50])
    first = run(images, [plan], tmp_path / "run", limit=1)
    assert first.records[0].codec_identity == ""
    assert first.records[0].key[5] == first.records[0].codec_options
    _strip_identity(tmp_path / "run" / "records.csv")  # an older bench version's file
    jobs: list[int] = []
    again = run(
        images, [plan], tmp_path / "run", limit=1, resume=True, progress=lambda *_: jobs.append(1)
    )
    assert not jobs and again.records[0].encode_s == first.records[0].encode_s
    with (tmp_path / "run" / "records.csv").open() as handle:
        assert "codec_identity" in handle.readline().split(",")


def _task(weights: str, sha: str, **options: object) -> SegmentationTask:
    return SegmentationTask(
        "espnetv2",
        "bench.tasks.espnetv2:ESPNetv2",
        {"weights": weights, "device": "cpu", **options},
        [f"class {i}" for i in range(19)],
        {"weights": weights, "weights_sha256": sha},
    )


def test_the_segmenter_identity_is_its_weights_content_not_their_path():
    # Before the fix, a byte-identical copy at another path changed the identity (every
    # record redone), while options other than the path still count.
    same = _task("/a/model.pth", "1" * 64), _task("/b/copy.pth", "1" * 64)
    assert same[0].identity == same[1].identity
    assert _task("/a/model.pth", "2" * 64).identity != same[0].identity
    assert _task("/a/model.pth", "1" * 64, s=1.0).identity != same[0].identity
    assert _task("/a/model.pth", "1" * 64, device="cuda").identity == same[0].identity
    # The identity earlier versions gave it (path included) still counts as this task's.
    earlier = same[0].previous_identities()
    assert len(earlier) == 1 and earlier[0] != same[0].identity
    assert earlier != same[1].previous_identities()


# --------------------------------------------------------------------------- segmenter runs


class TinySegmenter(TorchSegmenter):
    """A 1x1 convolution over three classes: a segmenter with a weights file, in no time."""

    name = "tiny-test"
    class_names = ("a", "b", "c")

    @property
    def architecture(self) -> str:
        return "1x1 conv"

    def build_model(self):
        return torch.nn.Conv2d(3, 3, 1)

    def prepare(self, image):
        return torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255


@pytest.fixture
def labelled(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(
        SEGMENTERS._entries, "tiny-test", Entry("tiny-test", f"{__name__}:TinySegmenter")
    )
    root = tmp_path / "labelled"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.png"
        )
        Image.fromarray(rng.integers(0, 3, (32, 48), dtype=np.uint8)).save(
            root / "labels" / f"{name}.png"
        )
    options = {"data_dir": root / "images", "label_dir": root / "labels", "num_classes": 3}
    return open_dataset("folder", options)


def _segmented(dataset, weights: Path, out: Path, **kwargs) -> tuple[list, int]:
    jobs: list[int] = []
    task = plan_segmenter("tiny-test", {"weights": str(weights)})
    result = run(
        dataset,
        [plan_codec("jpeg", rates=[50])],
        out,
        task=task,
        progress=lambda *_: jobs.append(1),
        **kwargs,
    )
    return result.records, len(jobs)


def test_a_copy_of_the_segmenter_weights_at_another_path_redoes_nothing(labelled, tmp_path):
    # Before the fix, every record was done again (the path was part of the task identity).
    torch.manual_seed(0)
    weights = tmp_path / "seg.pt"
    torch.save(torch.nn.Conv2d(3, 3, 1).state_dict(), weights)
    first, _ = _segmented(labelled, weights, tmp_path / "run")
    copy = tmp_path / "copy" / "seg.pt"
    copy.parent.mkdir()
    shutil.copyfile(weights, copy)
    again, jobs = _segmented(labelled, copy, tmp_path / "run", resume=True)
    assert jobs == 0
    assert [r.segment_s for r in again] == [r.segment_s for r in first]
    # Other weights at the copy's path: every record is redone.
    torch.save(torch.nn.Conv2d(3, 3, 1).state_dict(), copy)
    _, jobs = _segmented(labelled, copy, tmp_path / "run", resume=True)
    assert jobs > 0


def test_older_segmentation_records_keep_counting(labelled, tmp_path):
    """Records whose task column holds the identity of earlier versions (path included)
    are this task's: a resume redoes none of them."""
    torch.manual_seed(0)
    weights = tmp_path / "seg.pt"
    torch.save(torch.nn.Conv2d(3, 3, 1).state_dict(), weights)
    _segmented(labelled, weights, tmp_path / "run")
    task = plan_segmenter("tiny-test", {"weights": str(weights)})
    (earlier,) = task.previous_identities()
    path = tmp_path / "run" / "records.csv"
    path.write_text(path.read_text().replace(task.identity, earlier))
    assert {r.task for r in read_csv(path)} == {earlier}
    _, jobs = _segmented(labelled, weights, tmp_path / "run", resume=True)
    assert jobs == 0
    assert {r.task for r in read_csv(path)} == {task.identity}


def test_older_segmentation_records_of_a_copy_at_another_path_keep_counting(labelled, tmp_path):
    """An older run's records (path-based identity, also in its manifest) resumed with a
    byte-identical copy of the weights elsewhere: the manifest's hash matches them."""
    torch.manual_seed(0)
    weights = tmp_path / "seg.pt"
    torch.save(torch.nn.Conv2d(3, 3, 1).state_dict(), weights)
    _segmented(labelled, weights, tmp_path / "run")
    task = plan_segmenter("tiny-test", {"weights": str(weights)})
    (earlier,) = task.previous_identities()
    for name in ("records.csv", "manifest.json"):
        path = tmp_path / "run" / name
        path.write_text(path.read_text().replace(task.identity, earlier))
    copy = tmp_path / "copy.pt"
    shutil.copyfile(weights, copy)
    _, jobs = _segmented(labelled, copy, tmp_path / "run", resume=True)
    assert jobs == 0


def test_codec_identity_replaces_every_weight_option_by_the_content_of_its_rate_point():
    from bench.runner import codec_identity

    one_file = {"weights": {"file": "/w/tic.pt", "sha256": "a" * 64, "config": {}}}
    per_rate = {"weights": {"3": {"file": "/z/q3.pth", "sha256": "b" * 64}, "4": {"missing": "x"}}}
    options = {"weights": "/w/tic.pt", "device": "cpu"}
    assert json.loads(codec_identity(options, ("weights",), one_file, 0.5)) == {
        "weights": "sha256:" + "a" * 64,
        "device": "cpu",
    }
    assert json.loads(codec_identity(options, ("weights",), per_rate, 3.0))["weights"] == (
        "sha256:" + "b" * 64
    )
    assert codec_identity(options, ("weights",), per_rate, 4.0) == ""  # no checkpoint: fails
    assert codec_identity(options, ("weights",), {"weights": "random (seeded)"}, 3.0) == ""
    assert codec_identity(options, (), one_file, 0.5) == ""  # a classical codec
    both = {"checkpoint": "ckpt/q{rate}.pth", "checkpoint_sha256": "", "model": "m:f"}
    named = json.loads(codec_identity(both, ("checkpoint", "checkpoint_sha256"), per_rate, 3.0))
    assert named == {
        "checkpoint": "sha256:" + "b" * 64,
        "checkpoint_sha256": "sha256:" + "b" * 64,
        "model": "m:f",
    }
    two = {"weights": {"0.03125": {"sha256": "c" * 64}, "0.0625": {"sha256": "d" * 64}}}
    searched = json.loads(codec_identity(options, ("weights",), two, 0.05, searched=True))
    assert searched["weights"] == ["sha256:" + "c" * 64, "sha256:" + "d" * 64]


def test_every_learned_codec_names_its_weight_options():
    from bench.codecs import CODECS

    learned = ("gan", "mae", "tic", "tic-hp", "bmshj2018-factorized", "mbt2018", "cheng2020-attn")
    for name in learned:
        assert CODECS.load(name).weight_options == ("weights",), name
    assert CODECS.load("compressai-model").weight_options == ("checkpoint", "checkpoint_sha256")
    assert CODECS.load("jpeg").weight_options == ()
