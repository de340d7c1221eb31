"""The run manifest: how a run's numbers were made, written and read in this module only.

``manifest.json`` holds a ``RunManifest`` as JSON with a ``schema_version``. Older files
are migrated on reading: version 1 (before the version was written) and version 2 (a
``task`` name plus the segmentation task's provenance in a ``segmenter`` field). ``bench
check``, the report and ``bench curves`` read it through ``read_manifest``, and rebuild the
run's codecs, dataset, metrics and task through the functions below (the report's crops
re-code with them).
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
    from bench.tasks.task import Task

MANIFEST = "manifest.json"
SCHEMA_VERSION = 3
"""Version 2: metrics, task identity, dataset options and codec inputs are recorded.
Version 3: ``task`` is ``{name, identity, provenance}`` of any registered task (or null);
version 2's ``task`` name and ``segmenter`` provenance are read into it."""


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
class TaskEntry:
    """The run's task as the manifest records it: its registry name, its identity (the
    ``task`` column of its records) and what ``Task.provenance`` reported (options, model,
    weights hash), from which ``Task.from_provenance`` rebuilds it."""

    name: str = ""
    identity: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)


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
    task: TaskEntry | None = None
    """The task run on the reconstructions; None for compression alone."""
    codecs: dict[str, CodecEntry] = field(default_factory=dict)
    records: dict[str, int] | None = None
    warnings: list[str] = field(default_factory=list)
    """What the run warned about before it started (e.g. a codec trained on scored images)."""

    @property
    def dataset_tag(self) -> str:
        return str(self.dataset.get("tag") or "")

    @property
    def task_name(self) -> str:
        """The task's registry name, ``compression`` for none (``bench run --task``)."""
        from bench.tasks import NO_TASK

        return self.task.name if self.task is not None else NO_TASK

    @property
    def class_names(self) -> list[str]:
        """The class names the task recorded (segmentation's), else none."""
        return list((self.task.provenance if self.task else {}).get("class_names") or [])

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
        values = {k: v for k, v in data.items() if k in known and k not in ("codecs", "task")}
        values["schema_version"] = SCHEMA_VERSION
        if version == 1 and "metrics" not in data:
            values["metrics"] = list(DEFAULT_METRICS)
        values["task"] = _task_entry(data, version)
        entry_fields = {f.name for f in fields(CodecEntry)} - {"provenance"}
        codecs = {}
        for name, entry in (data.get("codecs") or {}).items():
            entry = entry if isinstance(entry, dict) else {}
            codecs[name] = CodecEntry(
                **{k: v for k, v in entry.items() if k in entry_fields},
                provenance={k: v for k, v in entry.items() if k not in entry_fields},
            )
        return cls(**values, codecs=codecs)


def _task_entry(data: dict[str, Any], version: int) -> TaskEntry | None:
    """The ``task`` of a manifest's JSON object; versions 1 and 2 named the task and kept
    the segmentation task's provenance in ``segmenter``."""
    task = data.get("task")
    if version >= 3:
        if task is None:
            return None
        if not isinstance(task, dict) or not task.get("name"):
            raise ValueError(f"task must be null or an object with a name, got {task!r}")
        return TaskEntry(
            str(task["name"]), str(task.get("identity") or ""), dict(task.get("provenance") or {})
        )
    old = data.get("segmenter")
    if not isinstance(task, str) or not isinstance(old, dict):
        return None  # compression alone (a task without its provenance cannot be rebuilt)
    return TaskEntry(task, str(old.get("identity") or ""), dict(old))


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


def task_entry(task: Task | None) -> TaskEntry | None:
    """What the manifest records about a planned task."""
    if task is None:
        return None
    return TaskEntry(task.name, task.identity, task.provenance())


def rebuild_task(manifest: RunManifest) -> Task | None:
    """The run's task through the ``TASKS`` registry, without loading its model (that
    happens when it first scores); None for compression alone.

    Raises:
        UsageError: the task is not registered here (a plugin that is not installed).
    """
    if manifest.task is None:
        return None
    from bench.tasks import rebuild_task_from

    return rebuild_task_from(manifest.task.name, manifest.task.provenance)


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
