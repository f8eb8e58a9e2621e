"""Crash-safe replacement of a checkpoint directory.

A checkpoint is written whole into ``.<name>.partial`` beside its final place, then swapped in with two
renames: the old directory moves to ``.<name>.old``, the new one takes its name, the old one is deleted.
Each rename is atomic on POSIX file systems, so at every instant a complete checkpoint exists under
``<name>`` or, in the moment between the two renames, under ``.<name>.old``; :func:`recover_directory`
puts it back after a crash in that moment. A crash while writing leaves only a ``.partial`` directory,
which the next save discards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def _old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_directory(path: str | Path) -> Path:
    """Restores ``path`` from ``.<name>.old`` when a crash fell between the two renames of a swap.

    Returns:
        ``path`` as a Path (which may still not exist when nothing was ever saved there).
    """
    path = Path(path)
    old = _old(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)
    return path


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yields an empty staging directory that replaces ``path`` only if the block finishes.

    Args:
        path: the directory to (re)place, e.g. ``OUTPUT/last``.

    Yields:
        The staging directory to write every file of the checkpoint into.
    """
    path = recover_directory(path)
    partial, old = _partial(path), _old(path)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    yield partial
    _fsync_tree(partial)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(partial, path)
    shutil.rmtree(old, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flushes every file under ``root`` to disk, so the renames never publish unwritten data."""
    for file in root.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
