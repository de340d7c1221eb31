"""Reference curves on disk: CompressAI's results JSON, bench's CSV form, and where names are
looked up.

CompressAI's form (``compressai.utils.eval_model`` writes it; ``compressai.utils.plot``
reads it)::

    {"name": "VTM", "description": "...", "results": {"bpp": [...], "psnr-rgb": [...], ...}}

bench reads it as it is and writes it with one more key, ``"bench"``, holding what the format
has no place for (dataset, source, licence, image count, notes); CompressAI's reader ignores
it. The CSV form has one row per point: ``name, dataset, bpp``, then any result keys (CompressAI's
or bench's aggregate column names), then ``source, licence, images, notes, kind``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import UsageError
from bench.references.curve import ReferenceCurve
from bench.store import write_atomic

__all__ = [
    "IMPORTED_ENV",
    "RUN_REFERENCES",
    "from_compressai",
    "imported_home",
    "read_compressai",
    "read_csv_curves",
    "read_file",
    "read_references",
    "resolve",
    "shipped",
    "to_compressai",
    "write_csv_curves",
    "write_references",
]

RUN_REFERENCES = "references.json"
"""The file of a run directory holding the reference curves its report and plots show."""

IMPORTED_ENV = "BENCH_REFERENCES"
"""Where ``bench import`` writes and names are looked up first (default
``~/.local/share/bench/references``)."""

_META = ("source", "licence", "images", "notes", "kind")
_CSV_FIXED = ("name", "dataset")


def imported_home() -> Path:
    configured = os.environ.get(IMPORTED_ENV)
    if configured:
        return Path(configured)
    return Path.home() / ".local" / "share" / "bench" / "references"


# --- CompressAI's JSON -----------------------------------------------------------------------


def read_compressai(
    path: Path, *, dataset: str | None = None, source: str = "", licence: str = ""
) -> ReferenceCurve:
    """A CompressAI results file (or one bench wrote) as a reference curve.

    ``dataset``, ``source`` and ``licence`` fill what the file's ``"bench"`` block does not
    say; a file without a dataset needs ``dataset``.

    Raises:
        UsageError: the file cannot be read, is not JSON of that form, or names no dataset.
    """
    return from_compressai(_json(path), path, dataset=dataset, source=source, licence=licence)


def from_compressai(
    data: dict[str, Any],
    path: Path,
    *,
    dataset: str | None = None,
    source: str = "",
    licence: str = "",
) -> ReferenceCurve:
    """A curve from a parsed CompressAI results object read from ``path``."""
    results = data.get("results", data)
    if not isinstance(results, dict) or "bpp" not in results:
        raise UsageError(
            f"{path} is not a CompressAI results file: it needs a 'results' object with a "
            "'bpp' list (as compressai.utils.eval_model writes)"
        )
    given = data.get("bench")
    meta: dict[str, Any] = given if isinstance(given, dict) else {}
    found = meta.get("dataset") or dataset
    if not found:
        raise UsageError(
            f"{path} does not say which dataset its points are on: pass --dataset (e.g. kodak)"
        )
    name = str(data.get("name") or path.name.split(".")[0])
    return ReferenceCurve(
        name=name,
        dataset=str(found),
        results=_numbers(results, path),
        source=str(meta.get("source") or source or path.name),
        licence=str(meta.get("licence") or licence),
        description=str(data.get("description") or ""),
        images=_count(meta.get("images")),
        notes=str(meta.get("notes") or ""),
        kind="points" if meta.get("kind") == "points" else "curve",
        origin=str(path),
    )


def to_compressai(curve: ReferenceCurve) -> dict[str, Any]:
    """A curve in CompressAI's form, with bench's ``"bench"`` block."""
    return {
        "name": curve.name,
        "description": curve.description or curve.name,
        "results": {key: list(values) for key, values in curve.results.items()},
        "bench": {
            "dataset": curve.dataset,
            "source": curve.source,
            "licence": curve.licence,
            "images": curve.images,
            "notes": curve.notes,
            "kind": curve.kind,
        },
    }


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} holds no JSON object (a CompressAI results file does)")
    return data


def _numbers(results: dict[str, Any], path: Path) -> dict[str, tuple[float, ...]]:
    """The result lists that hold numbers (CompressAI also stores e.g. per-image names)."""
    found: dict[str, tuple[float, ...]] = {}
    for key, values in results.items():
        if isinstance(values, list) and values and all(_is_number(v) for v in values):
            found[str(key)] = tuple(float(v) for v in values)
    if "bpp" not in found:
        raise UsageError(f"{path}: 'bpp' holds no list of numbers")
    return found


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- CSV -------------------------------------------------------------------------------------


def read_csv_curves(
    path: Path, *, dataset: str | None = None, source: str = "", licence: str = ""
) -> list[ReferenceCurve]:
    """The curves of a CSV file, one per ``name`` (and ``dataset``), in order of appearance.

    Raises:
        UsageError: unreadable file, a missing ``name`` or ``bpp`` column, a value that is not
            a number, or no dataset (neither a column nor ``dataset``).
    """
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} cannot be read as CSV ({exc})") from None
    if not rows or "name" not in rows[0] or "bpp" not in rows[0]:
        raise UsageError(f"{path} needs a header with at least 'name' and 'bpp' and one row")
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for line, row in enumerate(rows, start=2):
        found = (row.get("dataset") or dataset or "").strip()
        if not found:
            raise UsageError(f"{path} line {line}: no dataset (add a column or pass --dataset)")
        groups.setdefault(((row.get("name") or "").strip(), found), []).append(row)
    return [
        _curve(name, data, group, path, source, licence) for (name, data), group in groups.items()
    ]


def _curve(
    name: str, dataset: str, rows: list[dict[str, str]], path: Path, source: str, licence: str
) -> ReferenceCurve:
    keys = [k for k in rows[0] if k not in (*_CSV_FIXED, *_META) and k]
    results: dict[str, tuple[float, ...]] = {}
    for key in keys:
        texts = [(row.get(key) or "").strip() for row in rows]
        if not any(texts):
            continue
        try:
            results[key] = tuple(float(t) if t else math.nan for t in texts)
        except ValueError:
            raise UsageError(
                f"{path}: column {key!r} of {name!r} holds a value that is not a number"
            ) from None
    first = rows[0]
    return ReferenceCurve(
        name=name,
        dataset=dataset,
        results=results,
        source=first.get("source") or source or Path(path).name,
        licence=first.get("licence") or licence,
        images=_count(_float(first.get("images"))),
        notes=first.get("notes") or "",
        kind="points" if first.get("kind") == "points" else "curve",
        origin=str(path),
    )


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def write_csv_curves(curves: Sequence[ReferenceCurve], path: Path) -> None:
    """Curves as one CSV (read back by :func:`read_csv_curves`)."""
    keys = list(dict.fromkeys(k for c in curves for k in c.results))
    keys.remove("bpp")
    header: list[object] = [*_CSV_FIXED, "bpp", *keys, *_META]
    lines: list[list[object]] = [header]
    for curve in curves:
        for i in range(curve.points):
            values = [_text(curve.results[k][i]) if k in curve.results else "" for k in keys]
            meta = [curve.source, curve.licence, curve.images or "", curve.notes, curve.kind]
            lines.append(
                [curve.name, curve.dataset, _text(curve.results["bpp"][i]), *values, *meta]
            )
    write_atomic(path, _csv_text(lines))


def _text(value: float) -> str:
    return "" if math.isnan(value) else repr(float(value))


def _csv_text(lines: Iterable[Sequence[object]]) -> str:
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(lines)
    return buffer.getvalue()


# --- lookup ----------------------------------------------------------------------------------


def shipped() -> dict[str, Path]:
    """The reference files bench ships, by ``dataset/stem`` (``kodak/vtm``)."""
    root = resources.files("bench.references").joinpath("data")
    found: dict[str, Path] = {}
    for dataset in sorted(root.iterdir(), key=lambda p: p.name):
        if not dataset.is_dir():
            continue
        for item in sorted(dataset.iterdir(), key=lambda p: p.name):
            if item.name.endswith((".json", ".csv")):
                found[f"{dataset.name}/{item.name.rsplit('.', 1)[0]}"] = Path(str(item))
    return found


def _imported() -> dict[str, Path]:
    home = imported_home()
    if not home.is_dir():
        return {}
    return {
        f"{p.parent.name}/{p.stem}": p
        for p in sorted(home.glob("*/*"))
        if p.suffix in (".json", ".csv")
    }


def read_file(path: Path, dataset: str | None = None) -> list[ReferenceCurve]:
    """The curves of one file (JSON: CompressAI's form; CSV: bench's)."""
    if path.suffix.lower() == ".csv":
        return read_csv_curves(path, dataset=dataset)
    return [read_compressai(path, dataset=dataset or path.parent.name)]


def resolve(spec: str, dataset: str | None = None) -> list[ReferenceCurve]:
    """The curves ``spec`` names: a file, a directory of files, or a name.

    Names are looked up among the imported references (``bench import``) and then the ones
    bench ships, as ``dataset/name`` (``kodak/vtm``) or a bare name (``vtm``: in ``dataset``
    when given, else anywhere it is unique); ``dataset/*`` names all of a dataset's.

    Raises:
        UsageError: nothing matches (the message lists what is known) or a bare name is
            ambiguous.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return read_file(path, dataset)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".json", ".csv"))
        if not files:
            raise UsageError(f"{path} holds no .json or .csv reference file")
        return [curve for item in files for curve in read_file(item, dataset)]
    known = {**shipped(), **_imported()}
    wanted = spec.strip().lower()
    if wanted.endswith("/*"):
        prefix = wanted[:-1]
        chosen = [p for key, p in known.items() if key.lower().startswith(prefix)]
    elif "/" in wanted:
        chosen = [p for key, p in known.items() if key.lower() == wanted]
    else:
        chosen = [p for key, p in known.items() if key.lower().split("/", 1)[1] == wanted]
        if dataset is not None and len(chosen) > 1:
            chosen = [
                p for key, p in known.items() if key.lower() == f"{dataset.lower()}/{wanted}"
            ] or chosen
        if len(chosen) > 1:
            raise UsageError(
                f"reference {spec!r} is on several datasets "
                f"({', '.join(p.parent.name for p in chosen)}): write DATASET/{spec}"
            )
    if not chosen:
        raise UsageError(
            f"no reference curve {spec!r}: give a CompressAI JSON or CSV file, or one of "
            f"{', '.join(known)} (`bench references` lists them)"
        )
    return [curve for item in chosen for curve in read_file(item)]


# --- a run directory's references ----------------------------------------------------------------


def write_references(curves: Sequence[ReferenceCurve], directory: Path) -> Path:
    """Store ``curves`` in a run directory (its plots, BD tables and report show them)."""
    path = Path(directory) / RUN_REFERENCES
    payload = [to_compressai(c) for c in curves]
    write_atomic(path, json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return path


def read_references(directory: Path) -> list[ReferenceCurve]:
    """The curves a run directory stores; none when it has no references.json.

    Raises:
        UsageError: the file is damaged (the message names it).
    """
    path = Path(directory) / RUN_REFERENCES
    if not path.is_file():
        return []
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{path} cannot be read ({exc}); delete it or pass --reference again"
        ) from None
    if not isinstance(payload, list):
        raise UsageError(f"{path} holds no list of curves; delete it or pass --reference again")
    curves = []
    for entry in payload:
        if not isinstance(entry, dict):
            raise UsageError(f"{path}: an entry is not a JSON object")
        curves.append(from_compressai(entry, path))
    return curves
