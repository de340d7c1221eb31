"""Extracting downloaded archives without letting a member land outside the target."""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from bench.errors import DatasetError


def _checked_destination(target: Path, member: str, archive: Path) -> Path | None:
    """Where a member goes, or None for entries to skip; raises for unsafe names."""
    name = PurePosixPath(member.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise DatasetError(
            f"{archive}: member {member!r} would extract outside {target}; refusing the archive "
            "(it may be corrupt or malicious): delete it and download again"
        )
    if not name.parts or name.parts[0] == "__MACOSX" or name.name.startswith("._"):
        return None
    destination = (target / Path(*name.parts)).resolve()
    if not destination.is_relative_to(target.resolve()):
        raise DatasetError(f"{archive}: member {member!r} escapes {target}; refusing the archive")
    return destination


def extract(archive: Path, target: Path) -> list[Path]:
    """Extract a .zip or .tar(.gz/.bz2/.xz) archive into ``target``; returns the files written.

    Absolute names, ``..`` components, links and devices are refused before anything is
    written; macOS resource forks (``__MACOSX``, ``._*``) are skipped.

    Raises:
        DatasetError: an unsafe or unreadable archive (names the archive and the member).
    """
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                plan = [
                    (info, _checked_destination(target, info.filename, archive))
                    for info in zf.infolist()
                ]
                for info, destination in plan:
                    if destination is None or info.is_dir():
                        continue
                    if (info.external_attr >> 16) & 0o170000 == 0o120000:
                        raise DatasetError(
                            f"{archive}: member {info.filename!r} is a symbolic link; refusing"
                        )
                for info, destination in plan:
                    if destination is None or info.is_dir():
                        continue
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as source, destination.open("wb") as out:
                        shutil.copyfileobj(source, out)
                    written.append(destination)
            return written
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            plan_tar = [(m, _checked_destination(target, m.name, archive)) for m in members]
            for member, destination in plan_tar:
                if destination is not None and not (member.isfile() or member.isdir()):
                    raise DatasetError(
                        f"{archive}: member {member.name!r} is a link or device; refusing"
                    )
            for member, destination in plan_tar:
                if destination is None or not member.isfile():
                    continue
                stream = tf.extractfile(member)
                if stream is None:
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                with stream, destination.open("wb") as out:
                    shutil.copyfileobj(stream, out)
                written.append(destination)
            return written
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(
            f"{archive}: cannot extract ({exc}); delete it and download again"
        ) from exc
