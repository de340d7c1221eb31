"""Regression gate: freeze a run as a baseline, then compare a new run with it.

A baseline is a CSV (``bench baseline RUN_DIR --out NAME.csv``), human-readable and diffable:

    # bench-baseline 1              format line, then one ``# key: JSON`` line each for
    # dataset: "kodak"              the dataset tag, the image ids, the machine, the software,
    # images: ["kodim01", ...]      the task (name and identity), every codec's version and
    # machine: {...}                options, and the run's command
    kind,codec,rate_param,rate,image_id,sha256,n_images,...   (aggregates.csv's columns)
    point,jpeg,quality,50.0,,<digest>,4,0,0.828...            one row per rate point
    image,jpeg,quality,50.0,kodim01,<sha256>,,,...            one row per image of that point

A ``point`` row holds the aggregates (full precision, so an identical run compares exactly
equal) and the digest of its bitstreams: SHA-256 over the sorted ``image_id:sha256`` lines.
``image`` rows hold each bitstream's SHA-256 ("" where that image failed), so that a check
names the images whose bytes changed. ``compare`` returns findings; it prints nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from bench.curves import AGGREGATE_COLUMNS, TARGET_BPP, read_aggregates
from bench.errors import UsageError
from bench.manifest import read_manifest
from bench.records import latest_per_key, read_csv
from bench.rules import BETTER, FAIL, NOTE, OK, Rule, find_column, rules_for
from bench.store import AGGREGATES_CSV, MANIFEST, RECORDS_CSV, write_atomic

FORMAT = "bench-baseline 1"
KEY_COLUMNS = ["kind", "codec", "rate_param", "rate", "image_id", "sha256"]
RATE_POINT_COLUMNS = [
    c for c in AGGREGATE_COLUMNS if c not in ("dataset", "codec", "rate_param", "rate")
]
"""The numeric columns every aggregates.csv has; a baseline keeps them and every metric and
task column of the run."""


def _integer(column: str) -> bool:
    found = find_column(column)
    return found is not None and found.digits == 0


_HEADER_KEYS = ("dataset", "images", "machine", "software", "task", "codecs", "command")
"""The header lines written; baselines written before tasks were generic have ``segmenter``
(the segmentation model, or null) instead of ``task``, read as ``{"segmenter": ...}``."""


class PointKey(NamedTuple):
    """A rate point: (codec, rate parameter, rate)."""

    codec: str
    rate_param: str
    rate: float

    @property
    def label(self) -> str:
        """``rate_param=rate``, e.g. ``quality=50``."""
        return f"{self.rate_param}={self.rate:g}"


@dataclass
class Point:
    """One rate point: aggregate values by column, and bitstream SHA-256 by image id."""

    key: PointKey
    values: dict[str, float]
    hashes: dict[str, str]

    def value(self, metric: str) -> float:
        """The aggregate ``metric`` here (NaN when absent)."""
        return self.values.get(metric, math.nan)

    @property
    def digest(self) -> str:
        """SHA-256 over the sorted ``image_id:sha256`` lines of the point's bitstreams."""
        lines = "".join(f"{image}:{sha}\n" for image, sha in sorted(self.hashes.items()))
        return hashlib.sha256(lines.encode()).hexdigest()


@dataclass
class Snapshot:
    """What a check compares: a run directory, or a baseline read back from its CSV."""

    source: str
    dataset: str
    images: list[str]
    points: dict[PointKey, Point]
    machine: dict[str, Any] = field(default_factory=dict)
    software: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] | None = None
    """The run's task: its name and identity (what changes its numbers); None for none."""
    codecs: dict[str, dict[str, Any]] = field(default_factory=dict)
    command: str = ""


def snapshot_run(run_dir: Path) -> Snapshot:
    """Read a finished run directory (manifest.json, aggregates.csv, records.csv).

    Raises:
        UsageError: when the directory is not a finished bench run.
    """
    for name in (MANIFEST, AGGREGATES_CSV, RECORDS_CSV):
        if not (run_dir / name).is_file():
            raise UsageError(f"{run_dir} has no {name}: is it a finished bench run directory?")
    manifest = read_manifest(run_dir)
    dataset, images = manifest.dataset_tag, list(manifest.images)
    if not dataset:
        raise UsageError(f"{run_dir / MANIFEST} is not a bench manifest (it names no dataset)")
    if manifest.status != "finished":
        raise UsageError(
            f"the run in {run_dir} did not finish (status {manifest.status!r}): "
            f"continue it with `bench run ... --resume --out {run_dir}`"
        )
    try:
        rows = read_aggregates(run_dir / AGGREGATES_CSV)
        records = latest_per_key(read_csv(run_dir / RECORDS_CSV))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read the tables of {run_dir}: {exc}") from None
    hashes: dict[PointKey, dict[str, str]] = {}
    for record in records:
        key = (
            PointKey(record.codec, TARGET_BPP, record.target_bpp)
            if record.target_bpp is not None
            else PointKey(record.codec, record.rate_param, record.rate)
        )
        hashes.setdefault(key, {})[record.image_id] = record.sha256 if record.ok else ""
    points = {}
    for row in rows:
        key = PointKey(row.codec, row.rate_param, row.rate)
        values = {c: float(row.get(c)) for c in RATE_POINT_COLUMNS}
        values.update({c: float(v) for c, v in row.values.items()})
        points[key] = Point(key, values, hashes.get(key, {}))
    codecs = {
        name: {"version": entry.version, "options": entry.options}
        for name, entry in manifest.codecs.items()
    }
    task = manifest.task
    return Snapshot(
        source=str(run_dir),
        dataset=dataset,
        images=images,
        points=points,
        machine=manifest.machine,
        software=manifest.software,
        task={"name": task.name, "identity": task.identity} if task is not None else None,
        codecs=codecs,
        command=manifest.command,
    )


def write_baseline(snapshot: Snapshot, path: Path) -> None:
    """Write ``snapshot`` as a baseline CSV (see the module docstring for the format)."""
    held = dict.fromkeys(c for p in snapshot.points.values() for c in p.values)
    columns = [*KEY_COLUMNS, *RATE_POINT_COLUMNS, *(c for c in held if c not in RATE_POINT_COLUMNS)]
    out = io.StringIO()
    out.write(f"# {FORMAT}\n")
    for key in _HEADER_KEYS:
        out.write(f"# {key}: {json.dumps(getattr(snapshot, key), sort_keys=True)}\n")
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for point in snapshot.points.values():
        common = {"codec": point.key.codec, "rate_param": point.key.rate_param}
        common["rate"] = repr(point.key.rate)
        values = {
            c: int(v) if _integer(c) and math.isfinite(v) else repr(v)
            for c, v in point.values.items()
        }
        writer.writerow({"kind": "point", **common, "sha256": point.digest, **values})
        for image, sha in sorted(point.hashes.items()):
            writer.writerow({"kind": "image", **common, "image_id": image, "sha256": sha})
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, out.getvalue())


def read_baseline(path: Path) -> Snapshot:
    """Read a baseline CSV written by ``write_baseline``.

    Raises:
        UsageError: naming the file (and line) when it is missing or malformed.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read the baseline {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a bench baseline (not text)") from None
    if not lines or lines[0] != f"# {FORMAT}":
        raise UsageError(
            f"{path} is not a bench baseline (its first line should be '# {FORMAT}'); "
            "write one with `bench baseline RUN_DIR --out FILE`"
        )
    header: dict[str, Any] = {}
    number = 1
    while number < len(lines) and lines[number].startswith("#"):
        key, sep, value = lines[number][1:].partition(":")
        try:
            if not sep:
                raise ValueError("expected '# key: JSON'")
            header[key.strip()] = json.loads(value)
        except ValueError as exc:
            raise UsageError(f"{path}, line {number + 1}: malformed header ({exc})") from None
        number += 1
    missing = [k for k in ("dataset", "images") if k not in header]
    if missing:
        raise UsageError(f"{path}: the header lacks {', '.join(missing)}")
    points = _read_points(path, lines, number)
    return Snapshot(
        source=str(path),
        dataset=str(header["dataset"]),
        images=[str(i) for i in header["images"]],
        points=points,
        machine=header.get("machine") or {},
        software=header.get("software") or {},
        task=_baseline_task(header),
        codecs=header.get("codecs") or {},
        command=header.get("command", ""),
    )


def _baseline_task(header: dict[str, Any]) -> dict[str, Any] | None:
    """The ``task`` header, or an older baseline's ``segmenter`` header."""
    if "task" in header:
        task = header["task"]
        return task if isinstance(task, dict) else None
    old = header.get("segmenter")
    return {"segmenter": old} if old else None


_HEX = frozenset("0123456789abcdef")


def _digest(text: str, what: str) -> None:
    """ValueError unless ``text`` is a SHA-256 hex digest (64 hex characters)."""
    if len(text) != 64 or not _HEX.issuperset(text.lower()):
        raise ValueError(f"{what} {text!r} is not a SHA-256 digest (64 hex characters)")


def _number(column: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{column} {text!r} is not a number") from None


def _read_points(path: Path, lines: list[str], start: int) -> dict[PointKey, Point]:
    reader = csv.DictReader(lines[start:])
    absent = [c for c in KEY_COLUMNS if c not in (reader.fieldnames or [])]
    if absent:
        raise UsageError(f"{path}: the table lacks the column(s) {', '.join(absent)}")
    metrics = [c for c in reader.fieldnames or [] if c not in KEY_COLUMNS]
    points: dict[PointKey, Point] = {}
    width = len(reader.fieldnames or [])
    truncated = bool(lines) and not path.read_text().endswith("\n")
    for offset, row in enumerate(reader):
        number = start + offset + 2
        where = f"{path}, line {number}"
        try:
            extra = row.pop(None, None) or []  # type: ignore[call-overload, unused-ignore]
            given = width + len(extra) - sum(1 for v in row.values() if v is None)
            if given != width:
                raise ValueError(
                    f"{given} fields where the header has {width} (a partial or malformed row; "
                    "is the file truncated?)"
                )
            if truncated and number == len(lines):
                raise ValueError("the last row has no line end (is the file truncated?)")
            key = PointKey(row["codec"], row["rate_param"], float(row["rate"]))
            if row["kind"] == "point":
                if key in points:
                    raise ValueError(f"{key.codec} {key.label} is given twice")
                _digest(row["sha256"], "the point's digest")
                values = {m: _number(m, row[m]) for m in metrics if row.get(m) not in (None, "")}
                points[key] = Point(key, values, {})
            elif row["kind"] == "image":
                if key not in points:
                    raise ValueError("an image row before its point row")
                if row["sha256"]:  # "" where that image failed
                    _digest(row["sha256"], f"the bitstream hash of {row['image_id']!r}")
                points[key].hashes[row["image_id"]] = row["sha256"]
            else:
                raise ValueError(f"unknown kind {row['kind']!r} (point or image)")
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{where}: {exc}") from None
    return points


@dataclass(frozen=True)
class Finding:
    """One thing that moved, at one rate point (or on one codec's curve, for BD-rate).

    ``verdict`` is one of ``bench.rules``' FAIL, WARN, better, ok, note. ``baseline`` and
    ``new`` are numbers, or bitstream digests (for BD-rate: 0 and the drift in percent).
    """

    codec: str
    point: str
    metric: str
    baseline: float | str
    new: float | str
    rule: str
    verdict: str
    detail: str = ""

    @property
    def change(self) -> float:
        """``new - baseline`` (NaN for digests)."""
        if isinstance(self.baseline, str) or isinstance(self.new, str):
            return math.nan
        return self.new - self.baseline

    @property
    def relative(self) -> float:
        """``change`` relative to the baseline value (NaN where undefined)."""
        base = self.baseline
        if isinstance(base, str) or not math.isfinite(base) or base == 0:
            return math.nan
        return self.change / abs(base)


@dataclass
class CheckResult:
    """The findings of one check, notes about provenance, and how much was compared."""

    findings: list[Finding]
    notes: list[str]
    points: int
    images: int

    def count(self, verdict: str) -> int:
        """How many findings have ``verdict``."""
        return sum(1 for f in self.findings if f.verdict == verdict)

    @property
    def passed(self) -> bool:
        """No finding is a FAIL."""
        return self.count(FAIL) == 0


def require_comparable(baseline: Snapshot, run: Snapshot) -> None:
    """Raise UsageError unless both cover the same dataset, images and rate points."""
    if baseline.dataset != run.dataset:
        raise UsageError(
            f"{run.source} is a run on {run.dataset!r} but the baseline {baseline.source} is "
            f"of {baseline.dataset!r}: compare runs of the same dataset"
        )
    problems = []
    for what, base, new in (
        ("images", baseline.images, run.images),
        ("rate points", _labels(baseline.points), _labels(run.points)),
    ):
        missing = [x for x in base if x not in set(new)]
        extra = [x for x in new if x not in set(base)]
        if missing:
            problems.append(f"{what} of the baseline missing from the run: {_listed(missing)}")
        if extra:
            problems.append(f"{what} of the run not in the baseline: {_listed(extra)}")
    if problems:
        raise UsageError(
            f"{run.source} does not cover what the baseline {baseline.source} covers: "
            + "; ".join(problems)
            + ". Run the baseline's sweep (its command is in its header) or write a new baseline"
        )


def _labels(points: dict[PointKey, Point]) -> list[str]:
    return [f"{k.codec} {k.label}" for k in points]


def _listed(items: Sequence[str], shown: int = 8) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def compare(baseline: Snapshot, run: Snapshot, rules: Sequence[Rule]) -> CheckResult:
    """Compare a run with a baseline under ``rules`` (see ``bench.rules``).

    Besides the rules, a rate point with more failed records (or fewer coded images) than in
    the baseline is always a regression.

    Raises:
        UsageError: when the two are not comparable (see ``require_comparable``), or a
            required rule's metric is undefined in both.
    """
    require_comparable(baseline, run)
    same_machine = baseline.machine == run.machine
    findings: list[Finding] = []
    used: set[Rule] = set()
    defined: set[Rule] = set()
    for key, base in baseline.points.items():
        new = run.points[key]
        findings.extend(_failures(base, new))
        for rule in rules_for(rules, key.codec):
            if rule.kind == "bd_rate" or (rule.kind == "timing" and not same_machine):
                continue
            used.add(rule)
            evaluate = _identical if rule.kind == "identical" else _moved
            finding = evaluate(rule, base, new, defined)
            if finding is not None:
                findings.append(finding)
    findings.extend(_bd_rates(baseline, run, rules, used, defined))
    for rule in rules:
        if rule.required and rule in used and rule not in defined:
            raise UsageError(
                f"the rule {rule.kind} {rule.metric} {rule.describe()} (from {rule.origin}) "
                f"needs {rule.metric}, which neither the baseline {baseline.source} nor the run "
                f"{run.source} has for codecs {', '.join(rule.codecs)}"
            )
    notes = _notes(baseline, run, rules, same_machine)
    changed = sum(p.hashes != run.points[k].hashes for k, p in baseline.points.items())
    if changed and not any(r.kind == "identical" for r in used):
        notes.append(
            f"bitstreams differ from the baseline's at {changed} rate point(s); identity is "
            "not required (see the identical rule)"
        )
    return CheckResult(findings, notes, len(baseline.points), len(baseline.images))


def _failures(base: Point, new: Point) -> list[Finding]:
    for metric, worse in (("n_failed", 1.0), ("n_images", -1.0)):
        b, n = base.value(metric), new.value(metric)
        if math.isfinite(b) and math.isfinite(n) and (n - b) * worse > 0:
            failed = sorted(i for i, sha in new.hashes.items() if not sha and base.hashes.get(i))
            detail = f"failed now: {_listed(failed)} (see records.csv)" if failed else ""
            key = base.key
            return [Finding(key.codec, key.label, metric, b, n, "no new failures", FAIL, detail)]
    return []


def _identical(rule: Rule, base: Point, new: Point, defined: set[Rule]) -> Finding | None:
    key = base.key
    if not base.hashes:
        raise UsageError(
            f"the baseline has no bitstream hashes for {key.codec} {key.label}: "
            "write it again with `bench baseline`"
        )
    defined.add(rule)
    changed = sorted(i for i in base.hashes if new.hashes.get(i) != base.hashes[i])
    if not changed:
        return None
    detail = f"{len(changed)} of {len(base.hashes)} images changed: {_listed(changed)}"
    return Finding(
        key.codec, key.label, "bitstream", base.digest[:12], new.digest[:12],
        rule.describe(), rule.failing, detail,
    )  # fmt: skip


def _moved(rule: Rule, base: Point, new: Point, defined: set[Rule]) -> Finding | None:
    b, n = base.value(rule.metric), new.value(rule.metric)
    if math.isnan(b) and math.isnan(n):
        return None
    defined.add(rule)
    if b == n:
        return None
    verdict = rule.judge(b, n)
    if rule.kind == "timing" and verdict in (OK, BETTER):
        return None  # timings move by noise: only slowdowns are shown
    detail = {NOTE: "not defined in the baseline"}.get(verdict, "")
    if math.isnan(n):
        detail = "no longer defined"
    key = base.key
    return Finding(key.codec, key.label, rule.metric, b, n, rule.describe(), verdict, detail)


def _bd_rates(
    baseline: Snapshot, run: Snapshot, rules: Sequence[Rule], used: set[Rule], defined: set[Rule]
) -> list[Finding]:
    """BD-rate of each codec's new curve against its baseline curve, per rate parameter."""
    from bench.bjontegaard import Curve
    from bench.bjontegaard import compare as bd_compare

    groups: dict[tuple[str, str], list[PointKey]] = {}
    for key in baseline.points:
        groups.setdefault((key.codec, key.rate_param), []).append(key)
    out = []
    for (codec, rate_param), keys in groups.items():
        if len(keys) < 2:
            continue  # one point (e.g. the uncompressed reference) is not a curve
        for rule in (r for r in rules_for(rules, codec) if r.kind == "bd_rate"):
            used.add(rule)
            anchor, test = (
                Curve.of(
                    [snap.points[k].value("bpp_mean") for k in keys],
                    [snap.points[k].value(rule.metric) for k in keys],
                )
                for snap in (baseline, run)
            )
            if len(anchor.bpp) < 2 and len(test.bpp) < 2:
                continue  # undefined in both
            defined.add(rule)
            if anchor == test:
                continue
            result = bd_compare(anchor, test, anchor_name="baseline", test_name="run")
            out.append(
                Finding(
                    codec, f"{rate_param} curve", f"BD-rate % ({rule.metric})", 0.0,
                    result.bd_rate, rule.describe(), rule.judge(0.0, result.bd_rate),
                    result.warning,
                )
            )  # fmt: skip
    return out


def _notes(
    baseline: Snapshot, run: Snapshot, rules: Sequence[Rule], same_machine: bool
) -> list[str]:
    notes = []
    for name, base in baseline.codecs.items():
        new = run.codecs.get(name, base)
        if base.get("version") != new.get("version"):
            notes.append(f"{name} version differs: {base.get('version')} -> {new.get('version')}")
        old_options, new_options = base.get("options") or {}, new.get("options") or {}
        changed = [
            f"{k} {old_options.get(k, '(unset)')} -> {new_options.get(k, '(unset)')}"
            for k in sorted(set(old_options) | set(new_options))
            if old_options.get(k) != new_options.get(k)
        ]
        if changed:
            notes.append(f"{name} options differ: {', '.join(changed)}")
    for what, was, now in (
        ("bench version", baseline.software.get("bench"), run.software.get("bench")),
        ("task", baseline.task, run.task),
    ):
        if was != now:
            notes.append(f"{what} differs: {was} -> {now}")
    if not same_machine and any(r.kind == "timing" for r in rules):
        notes.append(
            "timings not compared: the baseline was measured on another machine "
            f"({_machine(baseline.machine)}; this run: {_machine(run.machine)})"
        )
    return notes


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "unknown"
    return f"{machine.get('hostname')}, {machine.get('cpu')} x{machine.get('cpu_count')}"
