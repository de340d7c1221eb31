"""Rules of ``bench check``: which change of which aggregate fails the regression gate.

A rule names a metric of ``aggregates.csv`` and how far it may move in its worse direction
(every metric knows whether higher is better). Kinds:

    tolerance   metric, abs and/or rel: the allowed worsening is the larger of ``abs`` and
                ``rel * |baseline|`` at each rate point
    bd_rate     metric, max: BD-rate (percent) of a codec's new curve against its baseline curve
    miou_drop   max: mIoU may fall by at most ``max`` percentage points at any rate point
    identical   bitstreams must be byte-identical to the baseline's
    timing      metric (encode_s_mean / decode_s_mean; both when omitted), rel and/or abs:
                allowed slowdown; a warning unless ``fail = true``; compared on the same machine

Every rule has ``codecs`` (fnmatch globs, default every codec) and ``fail`` (false: a warning).
Rules are applied in order defaults, rules file, ``--rule`` options; for one codec, a later rule
of the same kind and metric replaces an earlier one.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.types import parse_option_value
from bench.errors import UsageError
from bench.metrics.base import Column

TIMINGS = ("encode_s_mean", "decode_s_mean")
FAIL, WARN, BETTER, OK, NOTE = "FAIL", "WARN", "better", "ok", "note"
"""Verdicts: a regression, a warning, improved beyond the tolerance, moved within it, a note."""
KINDS = ("tolerance", "bd_rate", "miou_drop", "identical", "timing")

_KEYS = {  # the keys each kind accepts besides ``kind``
    "tolerance": {"metric", "abs", "rel", "codecs", "fail"},
    "bd_rate": {"metric", "max", "codecs", "fail"},
    "miou_drop": {"max", "codecs", "fail"},
    "identical": {"codecs", "fail"},
    "timing": {"metric", "abs", "rel", "codecs", "fail"},
}
_NUMBERS = ("abs", "rel", "max")


def _aggregate_columns() -> dict[str, Column]:
    """Every aggregate column with a direction: rate and time columns, every registered
    metric's and every registered task's (their objects say which way is better)."""
    from bench.curves import RATE_COLUMNS
    from bench.metrics import known_columns
    from bench.tasks import known_task_columns

    found = {c.name: c for c in RATE_COLUMNS}
    found.update(known_columns())
    found.update(known_task_columns())
    return {name: c for name, c in found.items() if c.higher_is_better is not None}


def find_column(name: str) -> Column | None:
    """The aggregate column ``name`` (with its direction), or None when nothing defines it."""
    from bench.tasks import describe_task_column

    found = _aggregate_columns().get(name)
    return found if found is not None else describe_task_column(name)


def is_metric(name: str) -> bool:
    """Whether ``name`` is an aggregate column with a direction, which a rule can compare."""
    found = find_column(name)
    return found is not None and found.higher_is_better is not None


def higher_is_better(metric: str) -> bool:
    """The direction of a metric, from its metric or task object: True when higher is better.

    >>> higher_is_better("psnr_rgb_mean"), higher_is_better("bpp_mean")
    (True, False)
    """
    found = find_column(metric)
    if found is None or found.higher_is_better is None:
        raise UsageError(
            _unknown("metric", metric, sorted(_aggregate_columns()), _column_of_metric(metric))
        )
    return found.higher_is_better


def _column_of_metric(name: str) -> str | None:
    """The main aggregate column of the metric whose ``--metrics`` token is ``name`` (its
    first BD column, else its first column), for a hint; None for other names."""
    from bench.metrics import METRICS

    if name not in METRICS.names():
        return None
    try:
        columns = METRICS.load(name).aggregate_columns
    except Exception:  # a broken plugin gives no hint
        return None
    preferred = [c for c in columns if c.bd] or list(columns)
    return preferred[0].name if preferred else None


def _unknown(what: str, name: str, known: Iterable[str], suggestion: str | None = None) -> str:
    known = list(known)
    close = (
        ([suggestion] if suggestion else [])
        or difflib.get_close_matches(name, known, n=1)
        or [k for k in known if name and k.startswith(name)]
    )
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; known: {', '.join(known)}"


@dataclass(frozen=True)
class Rule:
    """One rule. ``abs_tol``, ``rel_tol`` and ``limit`` are the ``abs``, ``rel`` and ``max`` keys.

    ``required`` rules (all but the defaults) are a usage error where their metric is undefined
    in both the baseline and the run; default rules are then skipped.
    """

    kind: str
    metric: str = ""
    codecs: tuple[str, ...] = ("*",)
    abs_tol: float | None = None
    rel_tol: float | None = None
    limit: float | None = None
    fail: bool = True
    required: bool = True
    origin: str = "default"

    def applies_to(self, codec: str) -> bool:
        """Whether one of the rule's ``codecs`` globs matches ``codec``."""
        return any(fnmatch.fnmatchcase(codec, pattern) for pattern in self.codecs)

    @property
    def slot(self) -> tuple[str, str]:
        """Rules with the same slot replace each other for the codecs they both match."""
        return (self.kind, self.metric)

    @property
    def failing(self) -> str:
        """The verdict when this rule is broken: FAIL, or WARN for ``fail = false``."""
        return FAIL if self.fail else WARN

    def allowance(self, baseline: float) -> float:
        """How far the metric may move in its worse direction from ``baseline``."""
        if self.kind == "bd_rate":
            return self.limit or 0.0
        if self.kind == "miou_drop":
            return (self.limit or 0.0) / 100.0
        allowed = [t for t in (self.abs_tol,) if t is not None]
        if self.rel_tol is not None and math.isfinite(baseline):
            allowed.append(self.rel_tol * abs(baseline))
        return max(allowed, default=0.0)

    def judge(self, baseline: float, new: float) -> str:
        """The verdict on a value that moved from ``baseline`` to ``new`` (not both NaN).

        For ``bd_rate`` the values are the drift in percent (baseline 0): higher is worse.

        >>> rule = Rule("tolerance", "psnr_rgb_mean", abs_tol=0.01)
        >>> rule.judge(30.0, 29.98), rule.judge(30.0, 29.995), rule.judge(30.0, 30.5)
        ('FAIL', 'ok', 'better')
        """
        if math.isnan(baseline):
            return NOTE
        if math.isnan(new):
            return self.failing
        higher_worse = self.kind == "bd_rate" or not higher_is_better(self.metric)
        worsening = (new - baseline) if higher_worse else (baseline - new)
        allowed = self.allowance(baseline)
        if worsening > allowed:
            return self.failing
        return BETTER if -worsening > allowed else OK

    def describe(self) -> str:
        """Short text for the table, e.g. ``abs 0.01`` or ``BD-rate <= 0.5%``."""
        if self.kind == "bd_rate":
            return f"BD-rate <= {self.limit:g}%"
        if self.kind == "miou_drop":
            return f"mIoU drop <= {self.limit:g} pt"
        if self.kind == "identical":
            return "identical bytes"
        parts = [f"abs {self.abs_tol:g}"] if self.abs_tol is not None else []
        if self.rel_tol is not None:
            parts.append(f"rel {100 * self.rel_tol:g}%")
        return " or ".join(parts)


def _default(kind: str, metric: str = "", **values: Any) -> Rule:
    return Rule(kind, metric, required=False, origin="default", **values)


DEFAULT_RULES: tuple[Rule, ...] = (
    _default("tolerance", "psnr_rgb_mean", abs_tol=0.01),
    _default("tolerance", "psnr_rgb_pooled", abs_tol=0.01),
    _default("tolerance", "ms_ssim_db_mean", abs_tol=0.01),
    _default("tolerance", "ssim_rgb_mean", abs_tol=1e-4),
    _default("tolerance", "bpp_mean", rel_tol=0.005),
    _default("tolerance", "bpp_pooled", rel_tol=0.005),
    _default("tolerance", "pixel_accuracy", abs_tol=0.001),
    _default("bd_rate", "psnr_rgb_mean", limit=0.5),
    _default("bd_rate", "ms_ssim_db_mean", limit=0.5),
    _default("miou_drop", "miou", limit=0.1),
    _default("timing", "encode_s_mean", rel_tol=1.0, abs_tol=0.01, fail=False),
    _default("timing", "decode_s_mean", rel_tol=1.0, abs_tol=0.01, fail=False),
)
"""The rules used unless a rules file says ``defaults = false`` (documented in docs/ci.md)."""


def rule_from_mapping(data: Mapping[str, Any], where: str, origin: str) -> list[Rule]:
    """Validate one rule given as a mapping (a TOML table or a parsed ``--rule``).

    Returns one rule, or two for a ``timing`` rule without a metric (encode and decode).

    Raises:
        UsageError: naming ``where`` and what is wrong.
    """
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        what = "missing 'kind'" if kind is None else _unknown("rule kind", str(kind), KINDS)
        raise UsageError(f"{where}: {what}")
    extra = sorted(set(data) - _KEYS[kind] - {"kind"})
    if extra:
        allowed = ", ".join(sorted(_KEYS[kind]))
        raise UsageError(f"{where}: a {kind} rule has no key {extra[0]!r} (it takes {allowed})")
    values: dict[str, Any] = {}
    for key in _NUMBERS:
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"{where}: {key} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise UsageError(f"{where}: {key} must be a finite number >= 0, got {value!r}")
            values[{"abs": "abs_tol", "rel": "rel_tol", "max": "limit"}[key]] = float(value)
    if "fail" in data:
        if not isinstance(data["fail"], bool):
            raise UsageError(f"{where}: fail must be true or false, got {data['fail']!r}")
        values["fail"] = data["fail"]
    elif kind == "timing":
        values["fail"] = False
    if "codecs" in data:
        values["codecs"] = _codecs(data["codecs"], where)
    metrics = _metrics(kind, data.get("metric"), where)
    if kind in ("tolerance", "timing") and "abs_tol" not in values and "rel_tol" not in values:
        raise UsageError(f"{where}: a {kind} rule needs abs or rel (or both)")
    if kind in ("bd_rate", "miou_drop") and "limit" not in values:
        raise UsageError(f"{where}: a {kind} rule needs max")
    return [Rule(kind, metric, origin=origin, **values) for metric in metrics]


def _codecs(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if (
        not isinstance(items, list | tuple)
        or not items
        or not all(isinstance(i, str) and i.strip() for i in items)
    ):
        raise UsageError(f"{where}: codecs must be a codec name or glob, or a list of them")
    return tuple(i.strip() for i in items)


def _metrics(kind: str, metric: Any, where: str) -> list[str]:
    defaults = {"bd_rate": ["psnr_rgb_mean"], "miou_drop": ["miou"], "identical": ["bitstream"]}
    if kind in ("miou_drop", "identical"):
        return defaults[kind]
    if metric is None:
        if kind == "tolerance":
            raise UsageError(f"{where}: a tolerance rule needs metric")
        return defaults.get(kind, list(TIMINGS))
    if not isinstance(metric, str) or not is_metric(metric):
        known = sorted(_aggregate_columns())
        raise UsageError(
            f"{where}: {_unknown('metric', str(metric), known, _column_of_metric(str(metric)))}"
        )
    if kind == "timing" and metric not in TIMINGS:
        raise UsageError(f"{where}: a timing rule takes metric {' or '.join(TIMINGS)}")
    if kind == "tolerance" and metric in TIMINGS:
        raise UsageError(f'{where}: {metric} is a timing; use kind = "timing"')
    if kind == "bd_rate" and (not higher_is_better(metric) or metric.startswith("n_")):
        raise UsageError(
            f"{where}: BD-rate needs a quality metric (higher is better), not {metric}"
        )
    return [metric]


def parse_rule_option(text: str) -> list[Rule]:
    """Parse ``--rule``: ``METRIC:abs=A,rel=R`` (a tolerance) or ``KIND[:KEY=VALUE,...]``.

    Lists of codecs are joined with ``+``.

    >>> parse_rule_option("psnr_rgb_mean:abs=0.05,codecs=jpeg+webp")[0].codecs
    ('jpeg', 'webp')
    >>> parse_rule_option("bd_rate:metric=ms_ssim_db_mean,max=1")[0].limit
    1.0
    """
    where = f"--rule {text!r}"
    head, _, rest = text.partition(":")
    head = head.strip()
    if head in KINDS:
        data: dict[str, Any] = {"kind": head}
    elif is_metric(head):
        data = {"kind": "tolerance", "metric": head}
    else:
        known = [*KINDS, *sorted(_aggregate_columns())]
        raise UsageError(
            f"{where}: {_unknown('rule kind or metric', head, known, _column_of_metric(head))}"
        )
    for item in (i for i in rest.split(",") if i.strip()) if rest.strip() else ():
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise UsageError(f"{where}: expected KEY=VALUE after ':', got {item.strip()!r}")
        if key in data:
            raise UsageError(f"{where}: {key} is given twice")
        data[key] = value.split("+") if key == "codecs" else parse_option_value(value)
    return rule_from_mapping(data, where, "--rule")


def read_rules_file(path: Path) -> tuple[bool, list[Rule]]:
    """Read a TOML rules file: ``defaults = true|false`` and ``[[rule]]`` tables.

    Returns whether to keep the default rules, and the file's rules in order.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise UsageError(f"cannot read the rules file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"defaults", "rule"})
    if extra:
        raise UsageError(
            f"{path}: unknown top-level key {extra[0]!r} (a rules file has `defaults` and "
            "[[rule]] tables)"
        )
    defaults = data.get("defaults", True)
    if not isinstance(defaults, bool):
        raise UsageError(f"{path}: defaults must be true or false, got {defaults!r}")
    tables = data.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise UsageError(f"{path}: rules are [[rule]] tables")
    rules = [
        rule
        for number, table in enumerate(tables, start=1)
        for rule in rule_from_mapping(table, f"{path}, rule {number}", str(path))
    ]
    return defaults, rules


def load_rules(path: Path | None = None, options: Sequence[str] = ()) -> list[Rule]:
    """The rules of one check: defaults (unless the file drops them), the file's, then options'."""
    defaults, from_file = read_rules_file(path) if path is not None else (True, [])
    from_options = [rule for text in options for rule in parse_rule_option(text)]
    return [*(DEFAULT_RULES if defaults else ()), *from_file, *from_options]


def rules_for(rules: Sequence[Rule], codec: str) -> list[Rule]:
    """The rules that apply to ``codec``: per kind and metric, the last rule matching it."""
    chosen: dict[tuple[str, str], Rule] = {}
    for rule in rules:
        if rule.applies_to(codec):
            chosen[rule.slot] = rule
    return list(chosen.values())
