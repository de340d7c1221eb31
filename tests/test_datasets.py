"""Cityscapes, CLIC and folder datasets on the real data in ../shared."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.datasets import open_dataset
from bench.datasets.base import read_label_png
from bench.datasets.cityscapes import CityscapesDataset, labelids_to_trainids
from bench.errors import DatasetError, UsageError
from bench.images import halve_labels, halve_rgb, read_rgb8

# --- Cityscapes ----------------------------------------------------------------------------


def test_cityscapes_splits_and_counts(cityscapes_root):
    val = CityscapesDataset(data_dir=cityscapes_root, split="val").refs()
    train = CityscapesDataset(data_dir=cityscapes_root, split="train").refs()
    assert [r.id for r in val] == [
        "frankfurt_000000_000294",
        "frankfurt_000000_000576",
        "frankfurt_000001_058914",
    ]
    assert len(train) == 9 and sum(r.id.startswith("aachen") for r in train) == 8
    assert all(r.label_path is not None for r in val + train)
    assert {r.dataset for r in val} == {"cityscapes/val"}


def test_cityscapes_frames_load_with_trainid_labels(cityscapes_root):
    for split in ("train", "val"):
        dataset = CityscapesDataset(data_dir=cityscapes_root, split=split)
        for ref in dataset.refs():
            sample = dataset.load(ref)
            assert sample.image.shape == (1024, 2048, 3) and sample.image.dtype == np.uint8
            assert sample.label is not None and sample.label.shape == (1024, 2048)
            values = set(np.unique(sample.label).tolist())
            assert values <= set(range(19)) | {255}
            assert len(values - {255}) >= 5  # a real street scene has many classes
    assert len(dataset.class_names) == 19
    assert dataset.class_names[0] == "road" and dataset.class_names[18] == "bicycle"


def test_labelids_mapping_agrees_with_shipped_labeltrainids(cityscapes_root):
    pairs = sorted(cityscapes_root.glob("gtFine/*/*/*_gtFine_labelIds.png"))
    assert len(pairs) == 9  # 8 aachen frames and frankfurt_000000_000576
    for label_ids in pairs:
        shipped = read_label_png(Path(str(label_ids).replace("_labelIds", "_labelTrainIds")))
        mapped = labelids_to_trainids(read_label_png(label_ids), label_ids)
        assert np.array_equal(mapped, shipped), label_ids.name


def test_labelids_are_used_when_no_labeltrainids_exist(cityscapes_root, tmp_path):
    root = _copy_frame(
        cityscapes_root,
        tmp_path,
        "val",
        "frankfurt",
        "frankfurt_000000_000576",
        labels=("labelIds",),
    )
    dataset = CityscapesDataset(data_dir=root, split="val")
    (ref,) = dataset.refs()
    assert ref.label_path.name.endswith("_labelIds.png")
    shipped = read_label_png(
        cityscapes_root / "gtFine/val/frankfurt/frankfurt_000000_000576_gtFine_labelTrainIds.png"
    )
    assert np.array_equal(dataset.load(ref).label, shipped)


def test_half_resolution(cityscapes_root):
    full = CityscapesDataset(data_dir=cityscapes_root, split="val")
    half = CityscapesDataset(data_dir=cityscapes_root, split="val", resolution="half")
    assert half.tag == "cityscapes/val@1024x512"
    ref = full.refs()[1]
    a, b = full.load(ref), half.load(half.refs()[1])
    assert b.image.shape == (512, 1024, 3) and b.label.shape == (512, 1024)
    assert "half resolution" in b.conversion
    blocks = a.image.astype(np.float64).reshape(512, 2, 1024, 2, 3).mean(axis=(1, 3))
    assert np.abs(b.image - blocks).max() <= 0.5  # the rounded 2x2 mean
    assert np.array_equal(b.label, a.label[::2, ::2])


def test_halving_helpers_on_odd_sizes():
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    assert halve_rgb(image).shape == (2, 3, 3)
    assert halve_labels(image[..., 0]).shape == (2, 3)


def _copy_frame(
    source: Path,
    tmp: Path,
    split: str,
    city: str,
    frame: str,
    labels: tuple[str, ...] = ("labelTrainIds",),
) -> Path:
    root = tmp / "cityscapes"
    (root / "leftImg8bit" / split / city).mkdir(parents=True)
    (root / "gtFine" / split / city).mkdir(parents=True)
    shutil.copy(
        source / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png",
        root / "leftImg8bit" / split / city,
    )
    for kind in labels:
        shutil.copy(
            source / "gtFine" / split / city / f"{frame}_gtFine_{kind}.png",
            root / "gtFine" / split / city,
        )
    return root


def test_test_split_has_images_only(cityscapes_root, tmp_path):
    root = tmp_path / "cs"
    (root / "leftImg8bit" / "test" / "berlin").mkdir(parents=True)
    shutil.copy(
        cityscapes_root / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
        root / "leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png",
    )
    dataset = CityscapesDataset(data_dir=root, split="test")
    (ref,) = dataset.refs()
    assert ref.label_path is None and dataset.load(ref).label is None
    status = dataset.status()
    assert status.images == 1 and status.labels == 0 and "no public labels" in status.detail


def test_label_of_the_wrong_size_is_named(cityscapes_root, tmp_path):
    frame = "frankfurt_000000_000294"
    root = _copy_frame(cityscapes_root, tmp_path, "val", "frankfurt", frame)
    label = root / f"gtFine/val/frankfurt/{frame}_gtFine_labelTrainIds.png"
    Image.open(label).resize((1024, 512), Image.NEAREST).save(label)
    dataset = CityscapesDataset(data_dir=root, split="val")
    with pytest.raises(
        DatasetError, match=rf"{frame}_gtFine_labelTrainIds\.png: label map is 1024x512"
    ):
        dataset.load(dataset.refs()[0])


def test_label_values_outside_the_table_are_named(cityscapes_root, tmp_path):
    frame = "frankfurt_000000_000576"
    root = _copy_frame(cityscapes_root, tmp_path, "val", "frankfurt", frame, labels=("labelIds",))
    path = root / f"gtFine/val/frankfurt/{frame}_gtFine_labelIds.png"
    values = np.asarray(Image.open(path)).copy()
    values[:10, :10] = 40
    Image.fromarray(values).save(path)
    dataset = CityscapesDataset(data_dir=root, split="val")
    with pytest.raises(DatasetError, match=r"values \[40\] are not Cityscapes labelIds"):
        dataset.load(dataset.refs()[0])
    # The same for a labelTrainIds file with a value above 18.
    root2 = _copy_frame(cityscapes_root, tmp_path / "b", "val", "frankfurt", frame)
    path2 = root2 / f"gtFine/val/frankfurt/{frame}_gtFine_labelTrainIds.png"
    values2 = np.asarray(Image.open(path2)).copy()
    values2[0, 0] = 19
    Image.fromarray(values2).save(path2)
    dataset2 = CityscapesDataset(data_dir=root2, split="val")
    with pytest.raises(DatasetError, match=r"values \[19\] are outside 0..18"):
        dataset2.load(dataset2.refs()[0])


def test_cityscapes_without_root_or_with_wrong_layout(tmp_path, monkeypatch):
    for var in ("CITYSCAPES_DATASET", "BENCH_CITYSCAPES_DIR"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(DatasetError, match=r"needs a login.*CITYSCAPES_DATASET=DIR"):
        CityscapesDataset().refs()
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"leftImg8bit/val does not exist.*official layout"):
        CityscapesDataset(data_dir=tmp_path).refs()
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    assert CityscapesDataset().root == tmp_path.resolve()
    with pytest.raises(UsageError, match="must be one of train, val, test"):
        open_dataset("cityscapes", {"split": "validation"})


# --- CLIC and folder -----------------------------------------------------------------------


def test_clic_from_a_local_directory(clic_dir):
    dataset = open_dataset("clic", {"data_dir": clic_dir})
    refs = dataset.refs()
    assert dataset.tag == "clic/professional-valid"
    assert [r.id for r in refs] == sorted(p.stem for p in clic_dir.glob("*.png"))
    assert len(refs) == 5
    for ref in refs:
        sample = dataset.load(ref)
        assert sample.image.dtype == np.uint8 and sample.image.shape[2] == 3
        assert min(sample.image.shape[:2]) >= 768 and max(sample.image.shape[:2]) <= 2048
    assert dataset.status().available and dataset.status().images == 5


def test_folder_reads_the_same_images_as_clic(clic_dir):
    clic = open_dataset("clic", {"data_dir": clic_dir, "split": "mobile-valid"})
    folder = open_dataset("folder", {"data_dir": clic_dir})
    assert folder.tag == "folder/clic"
    pairs = zip(clic.refs(), folder.refs(), strict=True)
    for a, b in list(pairs)[:2]:
        assert a.id == b.id
        assert np.array_equal(clic.load(a).image, folder.load(b).image)


def test_folder_with_labels(kodak, tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    (images / "sub").mkdir(parents=True)
    (labels / "sub").mkdir(parents=True)
    source = read_rgb8(kodak / "kodim07.png").pixels
    Image.fromarray(source).save(images / "sub" / "a.jpg", quality=95)
    Image.fromarray(source[:, :, ::-1]).save(images / "b.ppm")
    Image.fromarray(source).save(images / "c.tiff")
    Image.fromarray((source[..., 0] // 64).astype(np.uint8)).save(labels / "sub" / "a.png")
    Image.fromarray(np.full(source.shape[:2], 255, np.uint8)).save(labels / "b.png")
    dataset = open_dataset("folder", {"data_dir": images, "label_dir": labels, "num_classes": 4})
    refs = dataset.refs()
    assert [r.id for r in refs] == ["b", "c", "sub/a"]
    assert [r.label_path is not None for r in refs] == [True, False, True]
    a = dataset.load(refs[2])
    assert np.array_equal(a.label, source[..., 0] // 64)
    assert dataset.status().images == 3 and dataset.status().labels == 2
    with pytest.raises(DatasetError, match=r"a\.png: label values \[3\] are outside 0..2"):
        open_dataset("folder", {"data_dir": images, "label_dir": labels, "num_classes": 3}).load(
            refs[2]
        )
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labels / "b.png")
    with pytest.raises(DatasetError, match=r"b\.png: label map is 10x10"):
        dataset.load(refs[0])


def test_folder_errors_name_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="--data-dir"):
        open_dataset("folder").refs()
    with pytest.raises(DatasetError, match="no images in"):
        open_dataset("folder", {"data_dir": tmp_path}).refs()
    with pytest.raises(UsageError, match="needs num_classes"):
        open_dataset("folder", {"data_dir": tmp_path, "label_dir": tmp_path})
    with pytest.raises(UsageError, match="unknown option split; accepted: data_dir"):
        open_dataset("folder", {"data_dir": tmp_path, "split": "val"})
