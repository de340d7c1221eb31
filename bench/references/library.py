"""The imported references: ``bench import`` writes curves there, ``bench references`` lists
them beside the shipped ones.

An imported curve is one file, ``DATASET/STEM.json`` under :func:`imported_home`, in bench's
CompressAI form (:func:`to_compressai`), so ``--reference DATASET/STEM`` and ``--reference
STEM`` find it (:func:`resolve` looks there before the shipped data). ``DATASET`` is the
dataset's family (``kodak``, ``clic``, ``cityscapes``); the curve keeps its full tag
(``cityscapes/test``) inside the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from bench.errors import UsageError
from bench.references.curve import ReferenceCurve, column_of
from bench.references.files import (
    imported_home,
    read_compressai,
    read_csv_curves,
    read_file,
    shipped,
    to_compressai,
)
from bench.store import write_atomic

__all__ = [
    "FORMS",
    "UNVERIFIED",
    "Imported",
    "Listed",
    "dataset_folder",
    "import_files",
    "list_references",
    "quality_columns",
    "slug",
]

FORMS = ("compressai", "csv")
"""What ``bench import`` reads: CompressAI's results JSON, or bench's reference CSV."""

UNVERIFIED = "unverified source"
"""How an imported curve whose file names no source (or no licence) is recorded."""

Form = Literal["compressai", "csv"]


@dataclass(frozen=True)
class Imported:
    """One curve written by :func:`import_files`: where, under which name, and what the user
    should know about it (no source, no licence, a shipped curve it hides)."""

    curve: ReferenceCurve
    key: str  # DATASET/STEM, what --reference takes
    path: Path
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Listed:
    """One curve of ``bench references``: shipped or imported, or a file that cannot be read."""

    key: str
    where: Literal["shipped", "imported"]
    path: Path
    curve: ReferenceCurve | None = None
    error: str = ""
    hidden: bool = field(default=False)  # a shipped curve an imported one of that key hides

    @property
    def metrics(self) -> list[str]:
        """The quality columns the curve gives (``bpp`` and times left out)."""
        return [] if self.curve is None else quality_columns(self.curve)


def quality_columns(curve: ReferenceCurve) -> list[str]:
    """The aggregate columns a curve gives values of, but rate and times.

    >>> quality_columns(ReferenceCurve("X", "kodak", {"bpp": (1.0,), "psnr-rgb": (30.0,)}))
    ['psnr_rgb_mean']
    """
    skip = {"bpp_mean", "bpp_pooled", "encode_s_mean", "decode_s_mean"}
    return [column_of(k) for k in curve.results if column_of(k) not in skip]


def slug(text: str) -> str:
    """A file stem for a curve or codec name: lower case, runs of anything but letters,
    digits, ``.``, ``_`` and ``-`` as one ``-``.

    >>> slug("GAN (segmenter fine-tuned on GAN)"), slug("VTM-17.0")
    ('gan-segmenter-fine-tuned-on-gan', 'vtm-17.0')
    """
    found = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower()).strip("-.")
    return found or "curve"


def dataset_folder(dataset: str) -> str:
    """The folder a dataset's curves go in: the family of its tag, as the shipped data is
    laid out (``cityscapes/test@1024x512`` -> ``cityscapes``, ``clic/2018-test`` -> ``clic``).

    >>> dataset_folder("cityscapes/test@1024x512"), dataset_folder("Kodak")
    ('cityscapes', 'kodak')
    """
    for separator in ("[", "@", ":", "/"):
        dataset = dataset.split(separator)[0]
    return slug(dataset)


def import_files(
    form: Form,
    files: Sequence[Path],
    *,
    dataset: str | None = None,
    name: str | None = None,
    source: str = "",
    licence: str = "",
    to: Path | None = None,
    force: bool = False,
) -> list[Imported]:
    """Read ``files`` (CompressAI JSON or bench CSV) and write each curve into ``to``
    (default :func:`imported_home`) as ``DATASET/STEM.json``.

    A JSON file's curve is stored under the file's stem (``vtm.json`` -> ``kodak/vtm``), a CSV
    file's curves under their names; ``name`` renames a single curve and gives its stem. A
    file that states no source or licence (and none is passed) is recorded as
    :data:`UNVERIFIED` and says so in the result's warnings. Nothing is written unless every
    file reads and no target exists (``force`` replaces existing ones).

    Raises:
        UsageError: an unknown form, a file that cannot be read as that form (the message
            names it), no dataset, ``name`` for several curves, two curves with one target,
            or a target that exists without ``force``.
    """
    if form not in FORMS:
        raise UsageError(f"cannot import {form!r}; choose one of {', '.join(FORMS)}")
    if not files:
        raise UsageError(f"bench import {form}: name at least one file")
    read: list[tuple[ReferenceCurve, Path, str]] = []
    for item in files:
        path = Path(item)
        if form == "compressai":
            curve = read_compressai(path, dataset=dataset, source=source, licence=licence)
            read.append((curve, path, path.name.split(".")[0]))
        else:
            curves = read_csv_curves(path, dataset=dataset, source=source, licence=licence)
            read += [(c, path, c.name) for c in curves]
    if name is not None:
        if len(read) != 1:
            raise UsageError(
                f"--name renames one curve, but {', '.join(str(p) for p in files)} hold "
                f"{len(read)}; import them one at a time or leave --name out"
            )
        curve, path, _ = read[0]
        read = [(replace(curve, name=name), path, name)]
    home = Path(to) if to is not None else imported_home()
    known = shipped()
    planned: dict[Path, Imported] = {}
    for curve, path, stem in read:
        key = f"{dataset_folder(curve.dataset)}/{slug(stem)}"
        target = home / f"{key}.json"
        if target in planned:
            raise UsageError(
                f"{path} and {planned[target].curve.origin} both give {key}: "
                "import them separately with --name"
            )
        if target.exists() and not force:
            raise UsageError(
                f"{target} exists (an imported {key}); pass --force to replace it, or --name "
                "to import under another name"
            )
        recorded, warnings = _provenance(curve, path, source, licence)
        if key in known:
            warnings.append(
                f"{key} is also a curve bench ships: --reference {key} now means this one"
            )
        planned[target] = Imported(recorded, key, target, tuple(warnings))
    for target, done in planned.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = to_compressai(done.curve)
        write_atomic(target, json.dumps(payload, indent=1, allow_nan=True) + "\n")
    return list(planned.values())


def _provenance(
    curve: ReferenceCurve, path: Path, source: str, licence: str
) -> tuple[ReferenceCurve, list[str]]:
    """The curve as it is stored: a missing source or licence written as unverified."""
    warnings = []
    # The readers fall back to the file's name where neither the file nor the caller names a
    # source: that is no source.
    given_source = source or (curve.source if curve.source != path.name else "")
    if not given_source:
        warnings.append(
            f"{path} names no source: recorded as '{UNVERIFIED}'; pass --source "
            "(a URL, a paper and its table)"
        )
    if not (licence or curve.licence):
        warnings.append(
            f"{path} states no licence: recorded as '{UNVERIFIED}'; pass --licence if the "
            "numbers may be shared"
        )
    origin = f"{path.resolve()}"
    return (
        replace(
            curve,
            source=given_source or f"{UNVERIFIED} (imported from {origin})",
            licence=licence or curve.licence or UNVERIFIED,
        ),
        warnings,
    )


def list_references(home: Path | None = None) -> list[Listed]:
    """Every shipped and imported curve (imported ones from ``home``, default
    :func:`imported_home`), shipped first; a damaged file is listed with its error."""
    folder = Path(home) if home is not None else imported_home()
    imported = {
        f"{p.parent.name}/{p.stem}": p
        for p in sorted(folder.glob("*/*"))
        if p.is_file() and p.suffix in (".json", ".csv")
    }
    found: list[Listed] = []
    places: list[tuple[Literal["shipped", "imported"], dict[str, Path]]] = [
        ("shipped", shipped()),
        ("imported", imported),
    ]
    for where, files in places:
        for key, path in files.items():
            hidden = where == "shipped" and key in imported
            try:
                curves = read_file(path)
            except UsageError as exc:
                found.append(Listed(key, where, path, error=str(exc)))
                continue
            found += [Listed(key, where, path, c, hidden=hidden) for c in curves]
    return found
