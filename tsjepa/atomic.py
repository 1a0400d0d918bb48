"""Crash-safe writes: at every instant a file or folder written here is either its old or its new complete
version, and nothing else of the user's is touched.

A file goes to a temporary sibling, is fsynced, then renamed over the target (`write_file`). A folder is
replaced in four steps (`replace_dir`), each an atomic rename followed by an fsync of the parent:

    1. write ``.<name>.new/`` and fsync its files        (a crash leaves an incomplete .new: discarded)
    2. rename it to ``.<name>.ready/``                   (complete: a later recovery finishes the swap)
    3. rename ``<name>`` to ``.<name>.old/``             (the old copy, kept until the new one is in place)
    4. rename ``.<name>.ready`` to ``<name>``, remove ``.<name>.old``

`recover_dir` finishes or rolls back a swap that a kill interrupted, and says what it did; `replace_dir`
runs it first, so the next write (or the next training start) repairs the folder.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

# Tests set this to stop a process at a named phase of `replace_dir` ("written", "ready", "old-moved",
# "swapped", "cleaned"), e.g. with os._exit, to check that every instant is recoverable.
FAULT_HOOK: Callable[[str], None] | None = None


def _phase(name: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(name)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(path: Path) -> None:
    """Make the entries of folder ``path`` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Give every file below ``path`` and every folder the permissions of newly created ones (0666 / 0777 less
    the umask: some writers create 0600 files), fsync the files, then the folders, deepest first."""
    mask = _umask()
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            file = os.path.join(root, name)
            os.chmod(file, 0o666 & ~mask)
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
        os.chmod(root, 0o777 & ~mask)
        fsync_dir(Path(root))


def write_file(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary sibling, fsync, rename), with the permissions of a
    newly created file (0666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def _siblings(path: Path) -> tuple[Path, Path, Path]:
    return tuple(path.with_name(f".{path.name}.{tag}") for tag in ("new", "ready", "old"))


def recover_dir(path: str | os.PathLike) -> str | None:
    """Finish or roll back an interrupted `replace_dir` of ``path``; returns a sentence saying what was done,
    or None when there was nothing to do."""
    path = Path(path)
    new, ready, old = _siblings(path)
    done = []
    if new.exists():  # interrupted while writing: incomplete
        shutil.rmtree(new)
        done.append(f"removed the incomplete {new.name}")
    if ready.exists():  # a complete new copy: finish the swap
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(ready, path)
        fsync_dir(path.parent)
        done.append(f"completed the interrupted save into {path.name}")
    if old.exists():
        if path.exists():
            shutil.rmtree(old)
            done.append(f"removed the replaced copy {old.name}")
        else:  # cannot happen by the step order; keep the old copy rather than nothing
            os.replace(old, path)
            done.append(f"restored {path.name} from {old.name}")
    # temporary copies of older tsjepa versions: tempfile.mkdtemp(prefix=".<name>.") names, 8 random characters
    # (a pattern this narrow never matches another folder's siblings, e.g. ".last.v2.new" of "last.v2")
    legacy = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}")
    for stray in sorted(path.parent.glob(f".{path.name}.*")):
        if stray.is_dir() and legacy.fullmatch(stray.name) and stray.name not in {new.name, ready.name, old.name}:
            shutil.rmtree(stray)
            done.append(f"removed the abandoned temporary copy {stray.name}")
    return "; ".join(done) or None


def replace_dir(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(folder)`` to fill a new folder, then put it at ``path`` in place of what was there,
    crash-safely (see the module docstring). An exception in ``write`` leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    new, ready, old = _siblings(path)
    new.mkdir()
    try:
        write(new)
        fsync_tree(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    _phase("written")
    os.replace(new, ready)
    fsync_dir(path.parent)
    _phase("ready")
    if path.exists():
        os.replace(path, old)
        fsync_dir(path.parent)
    _phase("old-moved")
    os.replace(ready, path)
    fsync_dir(path.parent)
    _phase("swapped")
    shutil.rmtree(old, ignore_errors=True)
    _phase("cleaned")
    return path
