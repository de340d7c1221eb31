"""The checkpoint file of ``bench train``: checked before any training, locked while it runs.

- ``check_out`` refuses, before a step is trained, a path that cannot be written (a directory,
  a parent that is a file, an unwritable place) and an existing file without ``--resume`` (a
  trained checkpoint is never silently replaced).
- ``out_lock`` is ``bench.lock.RunLock`` on ``OUT.lock`` next to the checkpoint: a second
  ``bench train`` into the same ``--out`` is refused, naming the process that holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.errors import UsageError
from bench.lock import RunLock


def check_out_path(out: Path) -> None:
    """Refuse a checkpoint path that cannot be written, creating its missing parents.

    Raises:
        UsageError: ``out`` is a directory, its parent is a file, or it cannot be written.
    """
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a directory; give a checkpoint file (e.g. {out}/model.pt)"
        )
    parent = out.parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise UsageError(
                f"--out {out}: {ancestor} is a file, not a directory; choose another --out"
            )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"--out {out}: {parent} cannot be created ({exc.strerror or exc}); choose a "
            "writable place"
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"--out {out} is not writable; choose a writable place")


def check_no_overwrite(out: Path, resume: bool) -> None:
    """Refuse to train a new run over an existing file (``--resume`` continues it instead).

    Raises:
        UsageError: ``out`` exists and ``resume`` is false (naming the steps it holds).
    """
    if resume or not out.exists():
        return
    held = ""
    try:
        from bench.weights import read_checkpoint

        training = read_checkpoint(out, mmap=True)["training"]
        held = f" (a checkpoint trained {int(training.get('step', 0))} steps)"
    except Exception:  # not a checkpoint (or torch missing): still not ours to replace
        held = ""
    raise UsageError(
        f"--out {out} exists{held}; continue it with --resume, or train into another --out "
        "(bench train never replaces a file without --resume)"
    )


def out_lock(out: Path) -> RunLock:
    """The lock of checkpoint ``out``: ``OUT.lock`` next to it (``with out_lock(out): ...``)."""
    return RunLock(out.parent, f"{out.name}.lock", target=out, what="bench train")


__all__ = ["check_no_overwrite", "check_out_path", "out_lock"]
