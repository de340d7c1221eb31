"""Any mmsegmentation 1.x model, named the way its users name them: a config and a checkpoint."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.checkpoints import resolve_checkpoint
from bench.download import sha256_of
from bench.tasks.base import CITYSCAPES_CLASSES, Segmenter, resolve_device
from bench.types import Availability, Image, LabelMap
from bench.weights import load_state_dict, load_strict

_HINT = (
    "install the mmseg extra: scripts/setup.sh mmseg (mmcv 2.1.0 is compiled against the "
    "installed torch, about 13 minutes), which pins mmengine 0.10.7, mmcv 2.1.0 and "
    "mmsegmentation 1.2.2"
)


def find_config(config: str) -> Path:
    """A config file path, or the name of a config shipped inside the mmsegmentation package
    (e.g. ``fast_scnn_8xb4-160k_cityscapes-512x1024``)."""
    path = Path(config).expanduser()
    if path.is_file():
        return path.resolve()
    import mmseg

    root = Path(mmseg.__file__).parent / ".mim" / "configs"
    stem = path.name.removesuffix(".py")
    matches = sorted(root.rglob(f"{stem}.py"))
    if matches:
        return matches[0]
    names = [p.stem for p in root.rglob("*.py")]
    close = difflib.get_close_matches(stem, names, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"config {config!r} is neither a file nor a config shipped with mmsegmentation.{hint}"
    )


class MmsegSegmenter(Segmenter):
    """An mmsegmentation model: ``config`` (a path, or the name of a packaged config) and
    ``weights`` (a path, or a URL with ``weights_sha256``), on ``device``.

    The checkpoint is read with ``weights_only=True`` and loaded strictly into the model the
    config builds. Images go in as mmsegmentation's own pipeline expects them (BGR, the config's
    test-time resize and normalisation) and predictions come back at the image's size.
    """

    name = "mmseg"
    description = "any mmsegmentation 1.x config + checkpoint (mmcv compiled ops)"

    def __init__(
        self, *, config: str = "", weights: str = "", weights_sha256: str = "", device: str = "cpu"
    ) -> None:
        if not config:
            raise ValueError(
                "needs config=PATH or the name of a config shipped with mmsegmentation "
                "(--segmenter-option config=...)"
            )
        if not weights:
            raise ValueError("needs weights=PATH or URL (--segmenter-weights)")
        from mmseg.apis import init_model

        self.device = resolve_device(device)
        self.config = find_config(config)
        self.weights = resolve_checkpoint(weights, weights_sha256)
        self.model = init_model(str(self.config), checkpoint=None, device=self.device)
        load_strict(
            self.model, load_state_dict(self.weights), self.weights, f"config {self.config.name}"
        )
        self.model.eval()
        classes = int(self.model.decode_head.num_classes)
        meta = getattr(self.model, "dataset_meta", None) or {}
        names = tuple(meta.get("classes", ()))
        if classes == len(CITYSCAPES_CLASSES):
            self.class_names = CITYSCAPES_CLASSES
        elif len(names) == classes:
            self.class_names = names
        else:
            self.class_names = tuple(f"class {i}" for i in range(classes))

    @classmethod
    def availability(cls) -> Availability:
        try:
            import mmcv
            import mmengine
            import mmseg
            from mmcv.ops import nms  # noqa: F401 - the compiled ops mmseg imports
        except Exception as exc:  # ImportError, or the compiled ops failing to load
            return Availability(False, f"mmsegmentation not importable ({exc})", _HINT)
        return Availability(
            True,
            f"mmsegmentation {mmseg.__version__}, mmcv {mmcv.__version__}, "
            f"mmengine {mmengine.__version__}",
        )

    def predict_batch(self, images: Sequence[Image]) -> list[LabelMap]:
        if not images:
            return []
        import torch
        from mmseg.apis import inference_model

        with torch.inference_mode():
            results = inference_model(
                self.model, [np.ascontiguousarray(im[:, :, ::-1]) for im in images]
            )
        labels = []
        for image, result in zip(images, results, strict=True):
            label = result.pred_sem_seg.data[0].to("cpu").numpy().astype(np.int64)
            if label.shape != image.shape[:2]:
                raise ValueError(
                    f"mmseg returned a {label.shape} map for a {image.shape[:2]} image"
                )
            label[(label < 0) | (label >= self.num_classes)] = 255
            labels.append(label.astype(np.uint8))
        return labels

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": str(self.config),
            "weights": str(self.weights),
            "weights_sha256": sha256_of(self.weights),
            "device": self.device,
            "versions": self.availability().detail,
        }
