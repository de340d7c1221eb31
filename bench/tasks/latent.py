"""Segmentation from a learned codec's quantised latent, without decoding the image.

The arrangement of Chang & Yang's TIC paper (section III.B): ŷ, entropy-decoded from the real
bitstream (``Codec.decode_latent``), goes through a "transform layer" (a 1×1 convolution and a
pixel shuffle) into a segmenter whose stem is removed. The paper enters Mask2Former's Swin-T at
its first stage (192 → 1,536 channels, shuffle 4 → 96 channels at H/4); with ESPNetv2 (the
shared Cityscapes weights) the layer enters after ESPNetv2's stem, at level 2, whose blocks
take the stem's 32 channels at stride 2 and an image to reinforce their downsampling with, so
the layer makes 32 + 3 channels there (``Espnetv2Segmenter.latent_entry``).

``LatentSegmentationTask`` (``--task segmentation-latent``) scores every codec record from its
latent, with the segmentation task's columns (``miou``, ``pixel_accuracy``, ``miou_drop``,
...), so a decoded run and a latent run of the same codec compare curve against curve
(``bench report RUN_DECODED RUN_LATENT``). The uncompressed row (``none``) is segmented from
its pixels by the segmenter as given (its own weights, not the latent training's). The latent
network comes from ``bench train segmentation-latent`` (``bench.tasks.latent_train``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.download import sha256_of
from bench.errors import CodecError, UsageError
from bench.metrics.base import Column, Value
from bench.metrics.segmentation import confusion_matrix, encode_confusion, mean_iou, pixel_accuracy
from bench.tasks.base import logits_to_labels
from bench.tasks.segmentation import RECORD_COLUMNS, SegmentationTask
from bench.tasks.task import CodecView, Coded, Table
from bench.types import TRAINING_FILES, Latent
from bench.weights import WeightsError, read_checkpoint

try:
    import torch
    from torch import nn
except ImportError:  # listed as unavailable; nothing below runs without torch
    torch = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from bench.datasets import Sample
    from bench.records import Record
    from bench.tasks.base import Segmenter

LATENT_FORMAT = "segmentation-latent"
"""The trainable's name: checkpoints are ``bench-segmentation-latent-1``."""

LATENT_COLUMNS = (
    Column("latent_decode_s", "latent decode", "s", False, digits=4, hidden=True),
    Column("transform_params", "transform params", "", False, digits=0, hidden=True),
    Column("transform_gmacs", "transform GMAC", "", False, digits=4, hidden=True),
    Column("synthesis_params", "synthesis params", "", False, digits=0, hidden=True),
    Column("synthesis_gmacs", "synthesis GMAC", "", False, digits=4, hidden=True),
)
_COST = ("transform_params", "transform_gmacs", "synthesis_params", "synthesis_gmacs")
_TIMES = ("latent_decode_s", "segment_s")


@dataclass(frozen=True)
class LatentEntry:
    """Where a segmenter takes features instead of pixels (its stem removed).

    Attributes:
        stage: what the features replace, in words (for the manifest and the README).
        channels: channels the entry takes.
        stride: the entry's stride relative to the segmenter's input.
        input_size: (height, width) the segmenter sees images at.
        network: the segmenter's module (its parameters are the ones a joint training
            updates).
        run: entry features (N, channels, h, w) -> logits (N, K, *input_size).
    """

    stage: str
    channels: int
    stride: int
    input_size: tuple[int, int]
    network: Any
    run: Any


def shuffle_for(latent_stride: int, coded_height: int, entry: LatentEntry) -> int:
    """The pixel-shuffle factor that brings a latent of an image ``coded_height`` high to the
    entry's resolution (the nearest power of two): 4 for TIC's stride 16 on Cityscapes at
    2048×1024 into ESPNetv2's 1024×512 input at stride 2.

    >>> shuffle_for(16, 1024, LatentEntry("", 35, 2, (512, 1024), None, None))
    4
    """
    stride_in_input = latent_stride * entry.input_size[0] / coded_height
    return max(1, 2 ** round(math.log2(max(stride_in_input / entry.stride, 1e-9))))


def count_macs(module: Any, *inputs: Any) -> int:
    """Multiply-accumulates of one forward pass, counted by ``torch.utils.flop_counter``
    (which counts 2 FLOPs per multiply-accumulate of convolutions and matrix products, and
    nothing for normalisations, activations or pixel shuffles): its total over 2, the unit
    the TIC paper's Table 1 calls FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops()) // 2


def parameter_count(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _module_classes() -> dict[str, Any]:
    class TransformLayer(nn.Module):
        """ŷ (in_channels) -> 1×1 convolution to out_channels·shuffle² -> pixel shuffle:
        out_channels at ``shuffle`` times the latent's resolution."""

        def __init__(self, in_channels: int, out_channels: int, shuffle: int):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels * shuffle * shuffle, 1)
            self.shuffle = nn.PixelShuffle(shuffle)

        def forward(self, latent):  # noqa: ANN001
            return self.shuffle(self.conv(latent))

    class LatentSegmentationNet(nn.Module):
        """The transform layer, then the segmenter from its entry: latent -> logits at the
        segmenter's input size."""

        def __init__(self, entry: LatentEntry, in_channels: int, shuffle: int):
            super().__init__()
            self.transform = TransformLayer(in_channels, entry.channels, shuffle)
            self.segmenter = entry.network
            self._entry = entry

        def forward(self, latent):  # noqa: ANN001
            features = self.transform(latent)
            size = tuple(s // self._entry.stride for s in self._entry.input_size)
            if tuple(features.shape[-2:]) != size:
                features = nn.functional.interpolate(
                    features, size=size, mode="bilinear", align_corners=False
                )
            return self._entry.run(features)

    return {"TransformLayer": TransformLayer, "LatentSegmentationNet": LatentSegmentationNet}


def transform_layer(in_channels: int, out_channels: int, shuffle: int) -> Any:
    """The paper's transform layer: ``transform_layer(192, 96, 4)`` has 296,448 parameters."""
    return _module_classes()["TransformLayer"](in_channels, out_channels, shuffle)


def latent_network(segmenter: Segmenter, in_channels: int, shuffle: int) -> Any:
    """A transform layer in front of ``segmenter`` (which must have ``latent_entry``)."""
    entry = latent_entry_of(segmenter)
    return _module_classes()["LatentSegmentationNet"](entry, in_channels, shuffle)


def latent_entry_of(segmenter: Segmenter) -> LatentEntry:
    """The segmenter's entry for features.

    Raises:
        UsageError: the segmenter has none.
    """
    entry = getattr(segmenter, "latent_entry", None)
    if not callable(entry):
        raise UsageError(
            f"segmenter {segmenter.name} takes no features in place of its stem; latent "
            "segmentation works with espnetv2"
        )
    made: LatentEntry = entry()
    return made


def latent_tensor(latent: Latent) -> Any:
    """ŷ of the image itself (the rows and columns that cover padding dropped) as a
    (1, C, h, w) float tensor."""
    rows = -(-latent.height // latent.stride)
    cols = -(-latent.width // latent.stride)
    return torch.from_numpy(np.ascontiguousarray(latent.values[:, :rows, :cols]))[None]


@dataclass
class LatentModel:
    """A trained latent network as ``bench train segmentation-latent`` saved it."""

    network: Any
    config: dict[str, Any]
    path: Path
    sha256: str
    training: dict[str, Any]


def load_latent_model(path: str | Path, segmenter: Segmenter, device: str = "cpu") -> LatentModel:
    """The latent network of a checkpoint, around a fresh copy of ``segmenter``'s network.

    Raises:
        WeightsError: not such a checkpoint, or made for another segmenter.
    """
    import copy

    path = Path(path)
    checkpoint = read_checkpoint(path, LATENT_FORMAT)
    config = dict(checkpoint.get("config") or {})
    architecture = getattr(segmenter, "architecture", segmenter.name)
    if config.get("segmenter") != segmenter.name or config.get("architecture") != architecture:
        raise WeightsError(
            f"{path}: trained for {config.get('segmenter')} ({config.get('architecture')}), "
            f"not {segmenter.name} ({architecture}); give the segmenter it was trained with"
        )
    twin = copy.copy(segmenter)
    twin.model = copy.deepcopy(segmenter.model)  # type: ignore[attr-defined]
    network = latent_network(twin, int(config["latent_channels"]), int(config["shuffle"]))
    network.load_state_dict(checkpoint["model"], strict=True)
    network.eval().to(device)
    return LatentModel(
        network, config, path, sha256_of(path), dict(checkpoint.get("training") or {})
    )


class LatentSegmentationTask(SegmentationTask):
    """Segment every codec record from its latent (``--task segmentation-latent``).

    Options: those of the segmentation task (``segmenter``, ``weights``: the segmenter's own
    weights, for the uncompressed row and to build the network), and ``latent``: the
    checkpoint of ``bench train segmentation-latent`` (required).
    """

    name = "segmentation-latent"
    description = (
        "segment from the codec's quantised latent (entropy decoding only, a transform layer "
        "into the segmenter after its stem) and score mIoU"
    )

    def __init__(
        self,
        segmenter: str,
        target: str,
        options: Mapping[str, Any],
        class_names: Sequence[str],
        model_provenance: Mapping[str, Any],
        batch_size: int = 4,
    ) -> None:
        options = dict(options)
        latent = dict(model_provenance.get("latent") or {})
        self.latent_path = str(options.pop("latent", "") or latent.get("file", ""))
        self.latent_sha256 = str(latent.get("sha256", ""))
        self._net: LatentModel | None = None
        self._costs: dict[tuple[Any, ...], dict[str, float]] = {}
        super().__init__(segmenter, target, options, class_names, model_provenance, batch_size)

    @classmethod
    def plan(
        cls, segmenter: str, options: Mapping[str, Any] | None = None, batch_size: int = 4
    ) -> SegmentationTask:
        options = dict(options or {})
        latent = str(options.pop("latent", "") or "")
        if not latent:
            raise UsageError(
                "the segmentation-latent task needs the latent network: --task-option "
                "latent=CHECKPOINT (made by `bench train segmentation-latent`)"
            )
        task = super().plan(segmenter, options, batch_size)
        assert isinstance(task, LatentSegmentationTask)
        task.latent_path = latent
        model = load_latent_model(latent, task._segmenter(), str(options.get("device", "cpu")))
        task._net = model
        task.latent_sha256 = model.sha256
        task.model_provenance["latent"] = task._latent_provenance(model)
        return task

    @staticmethod
    def _latent_provenance(model: LatentModel) -> dict[str, Any]:
        return {
            "file": str(model.path),
            "sha256": model.sha256,
            "config": model.config,
            "steps": model.training.get("step"),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_net"], state["_costs"] = None, {}
        return state

    def _identity_of(self, options: Mapping[str, Any], weights: Any) -> str:
        base = super()._identity_of(options, [weights, self.latent_sha256])
        return base

    @property
    def record_columns(self) -> tuple[Column, ...]:
        return (*RECORD_COLUMNS, *LATENT_COLUMNS)

    def _latent_model(self) -> LatentModel:
        if self._net is None:
            device = str(self.options.get("device", "cpu"))
            self._net = load_latent_model(self.latent_path, self._segmenter(), device)
        return self._net

    def score_coded(
        self, sample: Sample, coded: Sequence[Coded], codec: CodecView
    ) -> list[dict[str, Value]]:
        """The uncompressed row from its pixels; every other from ``codec.decode_latent``
        of its bitstream (the reconstruction is not used)."""
        if codec.name == self.reference_codec:
            return self.score(sample, [item.image for item in coded])
        if not getattr(codec, "has_latent", False):
            raise CodecError(
                f"{codec.name} gives no latent from its bitstream; --task {self.name} needs a "
                "codec with one (tic, tic-hp)"
            )
        if sample.label is None:
            raise ValueError(f"{sample.id} has no label map")
        model = self._latent_model()
        trained_on = model.config.get("codec")
        if trained_on != codec.name:
            raise CodecError(
                f"the latent network {model.path} was trained on {trained_on}'s latents, not "
                f"{codec.name}'s; train one for {codec.name} (bench train segmentation-latent "
                f"--codec {codec.name})"
            )
        reference = self.reference_confusion(sample)
        k = len(self.class_names)
        rows: list[dict[str, Value]] = []
        for item in coded:
            began = time.perf_counter()
            latent = codec.decode_latent(item.data)
            decoded = time.perf_counter()
            with torch.inference_mode():
                x = latent_tensor(latent).to(next(model.network.parameters()).device)
                logits = model.network(x)
                prediction = logits_to_labels(logits, sample.label.shape[:2], k)
            done = time.perf_counter()
            cm = confusion_matrix(sample.label, prediction, k)
            rows.append(
                {
                    "miou": mean_iou(cm),
                    "pixel_accuracy": pixel_accuracy(cm),
                    "miou_drop": mean_iou(reference) - mean_iou(cm),
                    "segment_s": done - decoded,
                    "confusion": encode_confusion(cm),
                    "latent_decode_s": decoded - began,
                    **self._cost(codec, latent, x),
                }
            )
        return rows

    def _cost(self, codec: CodecView, latent: Latent, x: Any) -> dict[str, float]:
        """Parameters and multiply-accumulates of the transform layer and of the codec's
        synthesis transform on this latent (counted once per latent shape)."""
        key = (codec.name, tuple(x.shape))
        if key not in self._costs:
            transform = self._latent_model().network.transform
            cost = {
                "transform_params": float(parameter_count(transform)),
                "transform_gmacs": count_macs(transform, x) / 1e9,
            }
            if latent.synthesis is not None:
                full = torch.from_numpy(latent.values)[None]
                cost["synthesis_params"] = float(latent.synthesis_params)
                cost["synthesis_gmacs"] = count_macs(latent.synthesis, full) / 1e9
            self._costs[key] = cost
        return dict(self._costs[key])

    def aggregate(self, records: Sequence[Record]) -> dict[str, float]:
        """The segmentation columns, and the means of the latent path's times and costs and
        of the codec's full decoding (``image_decode_s_mean``)."""
        out = super().aggregate(records)
        for name in (*_TIMES, *_COST):
            values = [float(v) for r in records if isinstance(v := r.get(name), int | float)]
            if values:
                out[f"{name}_mean"] = float(np.mean(values))
        decodes = [float(r.decode_s) for r in records if r.decode_s is not None]
        if decodes:
            out["image_decode_s_mean"] = float(np.mean(decodes))
        return out

    def relative(self, rows: dict[str, float], reference: dict[str, float] | None) -> None:
        super().relative(rows, reference)
        if reference is not None and "latent_decode_s_mean" in rows:
            rows["decoded_path_s"] = rows.get("image_decode_s_mean", math.nan) + reference.get(
                "segment_s_mean", math.nan
            )
            rows["latent_path_s"] = rows["latent_decode_s_mean"] + rows.get(
                "segment_s_mean", math.nan
            )

    def tables(self, rows: Sequence[tuple[str, Mapping[str, float]]]) -> dict[str, Table]:
        """The segmentation task's tables and ``latent_cost``: per rate point, parameters
        and GMAC of the transform layer and of the codec's synthesis transform, and seconds
        per image of the latent path (entropy decoding + transform + segmenter) against
        decode-then-segment (the codec's full decoding + the segmenter on pixels, timed on
        the uncompressed row)."""
        tables = super().tables(rows)
        header = [
            "rate point",
            "transform params",
            "transform GMAC",
            "synthesis params",
            "synthesis GMAC",
            "latent path s",
            "decode-then-segment s",
        ]
        body = [
            [
                label,
                values.get("transform_params_mean", math.nan),
                values.get("transform_gmacs_mean", math.nan),
                values.get("synthesis_params_mean", math.nan),
                values.get("synthesis_gmacs_mean", math.nan),
                values.get("latent_path_s", math.nan),
                values.get("decoded_path_s", math.nan),
            ]
            for label, values in rows
            if "transform_gmacs_mean" in values
        ]
        if body:
            tables["latent_cost"] = Table(
                "Latent path against decode-then-segment",
                [header, *body],
                digits=4,
                note=(
                    "GMAC: multiply-accumulates counted by torch.utils.flop_counter (2 FLOPs "
                    "each; what the TIC paper's Table 1 calls FLOPs); times in seconds per "
                    "image on this run's device."
                ),
            )
        return tables

    def provenance(self) -> dict[str, Any]:
        """The segmentation task's, with the latent network (``latent``: file, SHA-256,
        config, steps) and under ``TRAINING_FILES`` the files it was trained on (for the
        runner's warning when a run scores them)."""
        found = super().provenance()
        if self._net is not None:
            found["latent"] = self._latent_provenance(self._net)
        elif self.latent_path:
            found.setdefault("latent", {"file": self.latent_path, "sha256": self.latent_sha256})
        files = (found["latent"].get("config") or {}).get(TRAINING_FILES)
        if files:  # with the segmenter's own, where its weights came from bench train
            found[TRAINING_FILES] = sorted({*found.get(TRAINING_FILES, ()), *files})
        return found


__all__ = [
    "LATENT_FORMAT",
    "LatentEntry",
    "LatentModel",
    "LatentSegmentationTask",
    "count_macs",
    "latent_entry_of",
    "latent_network",
    "latent_tensor",
    "load_latent_model",
    "parameter_count",
    "shuffle_for",
    "transform_layer",
]
