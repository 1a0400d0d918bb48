"""An exclusive lock on a run folder for the life of the process that writes it.

Two trainings on one ``run_dir`` would interleave their metrics and race on the checkpoint's temporary copies.
`RunLock` holds an ``fcntl.flock`` on ``<run_dir>/.lock``: the kernel releases it when the holder exits, is
killed or crashes, so a stale lock never blocks a later run. The file records the holder (pid, host, start
time), which a refused process names.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another live process holds the run folder."""


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir`` exclusively, or raises `RunLockedError` at once naming the
    folder and its holder."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        self.created = not self.run_dir.exists()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "an unknown process"
            os.close(fd)
            raise RunLockedError(f"{self.run_dir} is in use by another run ({holder}); wait for it to finish, "
                                 "or start this one with run_dir=<another folder>") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        """Release the lock; a folder this lock created and nothing else wrote into is removed again."""
        if self.fd is None:
            return
        os.ftruncate(self.fd, 0)
        if self.created and [p.name for p in self.run_dir.iterdir()] == [self.path.name]:
            self.path.unlink()
            self.run_dir.rmdir()
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None
