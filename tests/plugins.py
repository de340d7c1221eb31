"""Install a plugin distribution for one test: a ``*.dist-info`` with entry points on sys.path.

bench finds plugins through ``importlib.metadata.entry_points``, so a test that wants to show
that a third-party package can add a codec, task or trainer writes the metadata such a package
would install, puts it on ``sys.path`` (and ``PYTHONPATH``, for worker processes and ``bench``
subprocesses) and makes the registries read their entry points again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

from bench.registry import Registry

HERE = Path(__file__).parent


def install_plugin(
    monkeypatch: pytest.MonkeyPatch,
    site: Path,
    entry_points: Mapping[str, Mapping[str, str]],
    registries: Iterable[Registry],  # type: ignore[type-arg]
    distribution: str = "bench-toy-plugin",
) -> None:
    """Make ``entry_points`` ({group: {name: "module:attr"}}) visible to ``registries``.

    The targets' modules are imported from ``tests/`` (added to the path too). Undone after
    the test by ``monkeypatch``.
    """
    info = site / f"{distribution.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n", encoding="utf-8"
    )
    lines = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {target}" for name, target in entries.items())
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for path in (str(HERE), str(site)):
        monkeypatch.syspath_prepend(path)
    inherited = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), str(HERE), inherited]))
    for registry in registries:
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_plugins_loaded", False)
