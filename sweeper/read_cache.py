"""A reader's answer kept beside the store, so that asking again is instant. `best` on 10,000 trials
takes over a second to compute (importing pandas alone is most of it here), and its answer changes only
when the store or the code does.

The key: the command and its arguments, the size, mtime and inode of trials.parquet and study.json, and
every sweeper module's size and mtime. A store written since, a code change or other arguments miss and
compute afresh. The cache is `<study>/.cache/<name>.json`, written atomically; one that cannot be read
or written is only slower, never wrong.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

CACHE_DIR = ".cache"
_PACKAGE = Path(__file__).parent


def cache_key(store_dir: Path, *parts: Any) -> str:
    files = [store_dir / "trials.parquet", store_dir / "study.json"]
    stats = []
    for path in files:
        try:
            stat = path.stat()
            stats.append((path.name, stat.st_size, stat.st_mtime_ns, stat.st_ino))
        except OSError:
            stats.append((path.name, None))
    code = sorted(
        (str(p.relative_to(_PACKAGE)), p.stat().st_size, p.stat().st_mtime_ns) for p in _PACKAGE.rglob("*.py")
    )
    text = json.dumps([parts, stats, code], default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def read(store_dir: Path, name: str, key: str) -> str | None:
    """The cached text under `name` if it was stored under `key`; None otherwise."""
    try:
        entry = json.loads((store_dir / CACHE_DIR / f"{name}.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(entry, dict) and entry.get("key") == key and isinstance(entry.get("text"), str):
        return entry["text"]
    return None


def write(store_dir: Path, name: str, key: str, text: str) -> None:
    from trainers.atomic import atomic_write_text

    with contextlib.suppress(OSError):  # a read-only results folder: the next read computes again
        atomic_write_text(store_dir / CACHE_DIR / f"{name}.json", json.dumps({"key": key, "text": text}))


def recall(store_dir: Path, question: tuple) -> str | None:
    """The kept answer to `question` (("best", target), ("verify", axis, tol), ("status",)) of the store
    as it is now; None when there is none, it is stale, or SWEEPER_NO_CACHE is set."""
    if not enabled():
        return None
    return read(store_dir, name_for(*question), cache_key(store_dir, *question))


def remember(store_dir: Path, question: tuple, text: str) -> None:
    """Keep `text` as the answer to `question` of the store as it is now. Readers do this after computing
    an answer; the driver does it with the table it prints at the end of a run, so the first read after a
    run is answered at once."""
    write(store_dir, name_for(*question), cache_key(store_dir, *question), text)


def name_for(command: str, *parts: Any) -> str:
    """One cache file per command and arguments (a short hash), so `best` and `best --width 4096` do not
    evict each other."""
    digest = hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:12]
    return f"{command}-{digest}"


def enabled() -> bool:
    return os.environ.get("SWEEPER_NO_CACHE", "") in ("", "0")
