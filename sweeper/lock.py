"""One writer per study: an OS file lock on `results/<study>/.driver.lock`, held by the driver of a run.

The kernel releases a `flock` when its holder dies, so a kill -9 never leaves a stale lock. The file also
says who holds it (pid, host, start time, Ray folder), so that a refused second driver can name the
holder, and the next holder can clean up what a dead one left. Readers (`status`, `best`, ...) never
take it: every store write is atomic, so they read a consistent store while a run goes on.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from sweeper.errors import StudyError

LOCK_FILE = ".driver.lock"


class StudyLock:
    def __init__(self, folder: Path, study: str) -> None:
        self.path = folder / LOCK_FILE
        self.study = study
        self._fd: int | None = None
        self.previous: dict[str, Any] = {}  # what the last holder wrote (it has stopped, or died)

    def acquire(self, wait: bool = False) -> StudyLock:
        """Take the lock, or raise StudyError naming the holder (with `wait`, block until it is free)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe(read_holder(self.path))
            if not wait:
                os.close(fd)
                raise StudyError(
                    f"study {self.study!r} is being run by {holder} ({self.path}); wait for it to finish, "
                    "stop it, or rerun with --wait to start when it ends"
                ) from None
            print(f"waiting for {holder} to finish study {self.study!r}", file=sys.stderr, flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        self._fd = fd
        self.previous = read_holder(self.path)
        return self

    def note(self, **info: Any) -> None:
        """Write who holds the lock (and, once Ray is up, its folder) into the lock file."""
        if self._fd is None:
            return
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), **info}
        data = (json.dumps(record) + "\n").encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> StudyLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another driver"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"pid {holder.get('pid')} on host {holder.get('host')} (since {since})"
