"""Atomic file writes: write a temp file beside the target, then rename it over the target.

A crash or a kill never leaves a half-written file and a reader never sees one. The one writer of files
for both packages (`trainers` caches, the `sweeper` results store).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, then rename it over `path`.

    The file gets the permissions a plain `open` would give it (0666 less the umask), not mkstemp's 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any, *, quiet: bool = False) -> None:
    """JSON, indented; with `quiet`, a write that fails (a read-only cache folder) is skipped silently."""
    try:
        atomic_write_text(path, json.dumps(data, indent=1, default=str) + "\n")
    except OSError:
        if not quiet:
            raise
