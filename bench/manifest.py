"""The run manifest: how a run's numbers were made, written and read in this module only.

``manifest.json`` holds a ``RunManifest`` as JSON with a ``schema_version``. Older files
(version 1, before the version was written) are migrated on reading. ``bench check``, the
report and ``bench curves`` read it through ``read_manifest``, and rebuild the run's codecs,
dataset, metrics, task and segmenter through the functions below (the report's crops re-code
and re-segment with them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UsageError
from bench.metrics import DEFAULT_METRICS, Metric, create_metrics

if TYPE_CHECKING:
    from bench.codecs.base import Codec
    from bench.datasets import Dataset
    from bench.tasks.base import Segmenter
    from bench.tasks.task import Task

MANIFEST = "manifest.json"
SCHEMA_VERSION = 2
"""Version 2: metrics, task identity, dataset options and codec inputs are recorded."""


@dataclass
class CodecEntry:
    """One codec of a run as the manifest records it."""

    version: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    rate_param: str = ""
    rates: list[float] = field(default_factory=list)
    target_bpp: list[float] = field(default_factory=list)
    target_mode: str | None = None
    usable: bool | None = None
    unusable_reason: str = ""
    codec_input: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    """What the codec reported when it prepared (checkpoint files and their SHA-256)."""


@dataclass
class RunManifest:
    """How a run was made: command, code, machine, data, codecs, metrics, task, status."""

    schema_version: int = SCHEMA_VERSION
    command: str = ""
    started: str = ""
    ended: str | None = None
    status: str = "unknown"
    resumed: bool = False
    software: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    image_files: dict[str, str] = field(default_factory=dict)
    label_files: dict[str, str] = field(default_factory=dict)
    workers: int | None = None
    executor: str = ""
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    metric_provenance: dict[str, Any] = field(default_factory=dict)
    task: str = "compression"
    segmenter: dict[str, Any] | None = None
    """The segmentation task's provenance (model, weights hash, class names, identity)."""
    codecs: dict[str, CodecEntry] = field(default_factory=dict)
    records: dict[str, int] | None = None
    warnings: list[str] = field(default_factory=list)
    """What the run warned about before it started (e.g. a codec trained on scored images)."""

    @property
    def dataset_tag(self) -> str:
        return str(self.dataset.get("tag") or "")

    @property
    def class_names(self) -> list[str]:
        return list((self.segmenter or {}).get("class_names") or [])

    def to_json(self) -> str:
        data = asdict(self)
        data["codecs"] = {
            name: {**{k: v for k, v in entry.items() if k != "provenance"}, **entry["provenance"]}
            for name, entry in data["codecs"].items()
        }
        return json.dumps(data, indent=2, default=str) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunManifest:
        """A manifest from its JSON object, migrating older versions.

        Raises:
            ValueError: the object is not a bench manifest of a known version.
        """
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(
                f"manifest schema_version {version!r} is newer than this bench reads "
                f"({SCHEMA_VERSION}); upgrade bench"
            )
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known and k != "codecs"}
        values["schema_version"] = SCHEMA_VERSION
        if version == 1 and "metrics" not in data:
            values["metrics"] = list(DEFAULT_METRICS)
        entry_fields = {f.name for f in fields(CodecEntry)} - {"provenance"}
        codecs = {}
        for name, entry in (data.get("codecs") or {}).items():
            entry = entry if isinstance(entry, dict) else {}
            codecs[name] = CodecEntry(
                **{k: v for k, v in entry.items() if k in entry_fields},
                provenance={k: v for k, v in entry.items() if k not in entry_fields},
            )
        return cls(**values, codecs=codecs)


def write_manifest(directory: Path, manifest: RunManifest) -> None:
    """Write ``manifest.json`` atomically."""
    from bench.store import write_atomic

    write_atomic(directory / MANIFEST, manifest.to_json())


def read_manifest(directory: Path) -> RunManifest:
    """Read a run directory's manifest.

    Raises:
        UsageError: it is missing, not JSON, or not a bench manifest (naming the file).
    """
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise UsageError(f"{path} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a bench manifest (not a JSON object)")
    try:
        return RunManifest.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path} is not a bench manifest ({exc})") from None


# --- rebuilding what a run used ---------------------------------------------------------------


def rebuild_metrics(manifest: RunManifest) -> list[Metric]:
    """The run's metric objects (a metric not installed here is a UsageError)."""
    return create_metrics(manifest.metrics)


def rebuild_task(manifest: RunManifest) -> Task | None:
    """The run's task without loading its model (that happens when it first scores)."""
    info = manifest.segmenter
    if manifest.task != "segmentation" or not isinstance(info, dict):
        return None
    from bench.tasks.segmentation import SegmentationTask

    provenance = {
        k: v
        for k, v in info.items()
        if k not in ("class_names", "target", "options", "identity", "task", "batch_size")
    }
    return SegmentationTask(
        str(info.get("name") or ""),
        str(info.get("target") or ""),
        dict(info.get("options") or {}),
        list(info.get("class_names") or []),
        provenance,
        int(info.get("batch_size") or 4),
    )


def rebuild_segmenter(manifest: RunManifest, device: str | None = None) -> Segmenter:
    """The run's segmentation model, loaded (``device`` replaces the recorded one).

    Raises:
        UsageError, WeightsError: the manifest names no segmenter, or it cannot load here.
    """
    from bench.registry import construct, import_target

    info = manifest.segmenter
    if not isinstance(info, dict) or not info.get("target"):
        raise UsageError("the manifest names no segmenter (the run had no segmentation task)")
    options = dict(info.get("options") or {})
    if device is not None:
        options["device"] = device
    model: Segmenter = construct(import_target(str(info["target"])), options, "segmenter")
    return model


def rebuild_dataset(manifest: RunManifest) -> Dataset | None:
    """The run's dataset, never downloading; None when the manifest does not name it."""
    from bench.datasets import DATASETS
    from bench.registry import construct, keyword_options

    info = manifest.dataset
    if not info.get("name"):
        return None
    cls = DATASETS.load(str(info["name"]))
    accepted = keyword_options(cls)
    options: dict[str, object] = dict(manifest.dataset_options)
    if not options:  # a version-1 manifest: from the dataset's provenance
        directory = info.get("directory") or info.get("root")
        if directory:
            options["data_dir"] = directory
        for key in ("split", "resolution", "label_dir", "num_classes"):
            if info.get(key) is not None:
                options[key] = info[key]
    if "download" in accepted:
        options["download"] = False
    return construct(cls, {k: v for k, v in options.items() if k in accepted}, "dataset")


def rebuild_codec(manifest: RunManifest, name: str, options_json: str = "") -> Codec:
    """A codec of the run, built from its class and options (a record's ``codec_options``
    when given, else the manifest's).

    Raises:
        UsageError, CodecUnavailable: it cannot be built or run here (the message says why).
    """
    from bench.codecs import CODECS
    from bench.codecs.base import instantiate
    from bench.errors import CodecUnavailable
    from bench.registry import import_target

    entry = manifest.codecs.get(name)
    target = (entry.target if entry else "") or CODECS.entry(name).target
    cls = import_target(target)
    availability = cls.availability()
    if not availability.usable:
        raise CodecUnavailable(f"{name} is not usable here: {availability.detail}")
    options = json.loads(options_json) if options_json else (entry.options if entry else {})
    return instantiate(cls, options if isinstance(options, dict) else {})  # type: ignore[no-any-return]
