"""Nothing a user writes in a study file crashes `sweeper run`: every bad study is refused before anything
is written, with exit status 2 and one line on stderr, `error: <file>[:LINE]: ...`, and no traceback.

Most cases run the CLI in-process (typer's CliRunner: the same `app`, the same error handling, ~0.05 s a
case); a handful run `python -m sweeper.cli` in a subprocess, as a user would.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.study import DEFAULT_MAX_TRIALS, load_study
from trainers.data import CHUNK, VAL_EVERY, _split_sizes, corpus_problem, load_corpus

RUNNER = CliRunner()
SWEEPER = [sys.executable, "-m", "sweeper.cli"]

# The "billion laughs": nine levels of nine aliases of the level before, 9^9 values once expanded.
BOMB = "".join(
    f"{x}: &{x} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['1'] * 9)}]\n"
    for prev, x in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)

# A grid of 401 x 901 x 10 x 3 = 10,839,030 trials: refused by counting, not by expanding.
HUGE_GRID = """\
name: s
sweep:
  lr: {log2_grid: [-20, 0], step: 0.05}
  output_mult: {log2_grid: [0, 9], step: 0.01}
  init_std: {values: [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1]}
  eps: {values: [1.0e-8, 1.0e-7, 1.0e-6]}
"""

# name -> (the study file, a substring of the one error line). `{tmp}` is the test's folder, which holds
# small.txt (120 bytes of text), empty.txt and odd.bin (3 bytes).
CASES: dict[str, tuple[str | bytes, str]] = {
    # --- value ranges the trainer would fail on ---
    "betas above 1": (
        "name: s\ntrainer:\n  betas: [2, 3]\n",
        "study.yaml:3: trainer.betas: variant default: betas.0=2: Input should be less than 1",
    ),
    "negative beta in a variant": (
        "name: s\nvariants:\n  a: {}\n  b: {betas: [0.9, -0.1]}\n",
        "study.yaml:4: variants.b.betas: variant b: betas.1=-0.1: Input should be greater than or equal to 0",
    ),
    "beta of exactly 1": (
        "name: s\ntrainer: {betas: [0.9, 1.0]}\n",
        "betas.1=1.0: Input should be less than 1",
    ),
    "mlp_ratio .inf": (
        "name: s\ntrainer: {mlp_ratio: .inf}\n",
        "trainer.mlp_ratio: variant default: mlp_ratio=inf: Input should be a finite number",
    ),
    "lr .nan": (
        "name: s\ntrainer:\n  lr: .nan\n",
        "study.yaml:3: trainer.lr: variant default: lr=nan: Input should be a finite number",
    ),
    "lr .inf among swept values": (
        "name: s\nsweep:\n  lr:\n    values:\n      - 0.001\n      - .inf\n",
        "study.yaml:6: sweep.lr.values[1]: variant default, lr=inf: lr=inf: Input should be a finite number",
    ),
    "init_std -.inf on a scale axis": (
        "name: s\nscale:\n  init_std: [0.02, -.inf]\n",
        "scale.init_std[1]: variant default, init_std=-inf: init_std=-inf: Input should be a finite number",
    ),
    "grad_clip .inf": (
        "name: s\ntrainer: {grad_clip: .inf}\n",
        "grad_clip=inf: Input should be a finite number",
    ),
    "weight_decay .nan": (
        "name: s\ntrainer: {weight_decay: .nan}\n",
        "weight_decay=nan: Input should be a finite number",
    ),
    "negative weight_decay": (
        "name: s\ntrainer: {weight_decay: -0.1}\n",
        "weight_decay=-0.1: Input should be greater than or equal to 0",
    ),
    "warmup_frac above 1": (
        "name: s\ntrainer: {warmup_frac: 1.5}\n",
        "warmup_frac=1.5: Input should be less than or equal to 1",
    ),
    "lr of 0": ("name: s\ntrainer: {lr: 0}\n", "lr=0: Input should be greater than 0"),
    "lr past float32": (
        "name: s\nsweep:\n  lr: {values: [0.01, 1e40]}\n",
        "sweep.lr.values[1]: variant default, lr=1e+40: lr=1e+40: Input should be less than or equal to 1000000",
    ),
    "lr grid past float32": (
        "name: s\nsweep:\n  lr: {log2_grid: [-4, 200]}\n",
        "sweep.lr.log2_grid: variant default, lr=",
    ),
    "vocab_size 2 on the builtin corpus": (
        "name: s\ntrainer:\n  vocab_size: 2\n",
        "study.yaml:3: trainer.vocab_size: variant default: corpus builtin: vocab_size 2 is too small for byte-level text; need >= 256",
    ),
    "vocab_size 100 on a text file": (
        "name: s\ntrainer: {corpus: {tmp}/big.txt}\nvariants:\n  a: {}\n  b: {vocab_size: 100}\n",
        "study.yaml:5: variants.b.vocab_size: variant b: corpus {tmp}/big.txt: vocab_size 100 is too small",
    ),
    "vocab_size past the cap": (
        "name: s\ntrainer: {vocab_size: 10000000}\n",
        "vocab_size=10000000: Input should be less than or equal to 1048576",
    ),
    "width 1048576": (
        "name: s\nscale:\n  width: [64, 1048576]\n",
        "study.yaml:3: scale.width[1]: variant default, width=1048576: width=1048576: Input should be less than or equal to 65536",
    ),
    "depth 100000": (
        "name: s\ntrainer: {depth: 100000}\n",
        "depth=100000: Input should be less than or equal to 1024",
    ),
    "n_heads 1000000": (
        "name: s\ntrainer: {n_heads: 1000000}\n",
        "n_heads=1000000: Input should be less than or equal to 65536",
    ),
    "head_dim 1000000": (
        "name: s\ntrainer: {head_dim: 1000000}\n",
        "head_dim=1000000: Input should be less than or equal to 65536",
    ),
    "seq_len 10^7": (
        "name: s\ntrainer: {seq_len: 10000000}\n",
        "seq_len=10000000: Input should be less than or equal to 1048576",
    ),
    "batch_size 10^7": (
        "name: s\ntrainer: {batch_size: 10000000}\n",
        "batch_size=10000000: Input should be less than or equal to 1048576",
    ),
    "tokens per step past the cap": (
        "name: s\ntrainer: {batch_size: 65536, seq_len: 1024}\n",
        "batch_size 65536 x seq_len 1024 = 67108864 tokens per step; at most 16777216",
    ),
    "steps 10^10": (
        "name: s\ntrainer: {steps: 10000000000}\n",
        "steps=10000000000: Input should be less than or equal to 1000000000",
    ),
    "a model of 10^12 parameters": (
        "name: s\ntrainer: {depth: 64}\nscale:\n  width: [64, 65536]\n",
        "study.yaml:4: scale.width[1]: variant default, width=65536: width 65536, depth 64, mlp_ratio 4 and seq_len 64 make a model of about 3.3e+12 parameters",
    ),
    "an MLP of 0 units": (
        "name: s\ntrainer: {mlp_ratio: 0.001}\n",
        "mlp_ratio 0.001 x width 128 rounds to an MLP of 0 units",
    ),
    "threads 10^6": (
        "name: s\ntrainer: {threads: 1000000}\n",
        "threads=1000000: Input should be less than or equal to 4096",
    ),
    "seed 10^20": (
        "name: s\nseeds: [0, 100000000000000000000]\n",
        "study.yaml:2: seeds[1]: Input should be less than or equal to 4294967295 (got 100000000000000000000)",
    ),
    "seed 1e20 written as a float": (
        "name: s\nseeds:\n  - 1e20\n",
        "study.yaml:3: seeds[0]: Unable to parse input string as an integer, exceeded maximum size (got 1e+20)",
    ),
    "seed 2**32": (
        "name: s\nseeds: [4294967296]\n",
        "seeds[0]: Input should be less than or equal to 4294967295",
    ),
    "search seed too large for optuna": (
        "name: s\nsearch: {method: optuna, seed: 100000000000}\nsweep:\n  lr: {loguniform: [0.0001, 0.1]}\n",
        "study.yaml:2: search.seed: Input should be less than or equal to 4000000",
    ),
    # --- corpora: each value a study uses, checked without building it ---
    "missing corpus in trainer": (
        "name: s\ntrainer:\n  corpus: /nonexistent/corpus.txt\n",
        "study.yaml:3: trainer.corpus: variant default: corpus /nonexistent/corpus.txt: no such file or folder",
    ),
    "missing corpus in a variant": (
        "name: s\nvariants:\n  a: {}\n  b: {corpus: /nonexistent/b}\n",
        "study.yaml:4: variants.b.corpus: variant b: corpus /nonexistent/b: no such file or folder",
    ),
    "missing corpus on a scale axis": (
        "name: s\nscale:\n  corpus: [builtin, /nonexistent/c.txt]\n",
        "study.yaml:3: scale.corpus[1]: variant default, corpus='/nonexistent/c.txt': corpus /nonexistent/c.txt: no such file",
    ),
    "missing corpus among swept values": (
        "name: s\nsweep:\n  corpus:\n    values: [builtin, /nonexistent/x.txt]\n",
        "study.yaml:4: sweep.corpus.values[1]: variant default, corpus='/nonexistent/x.txt': corpus /nonexistent/x.txt: no such file or folder",
    ),
    "empty corpus name": ("name: s\ntrainer: {corpus: ''}\n", "corpus='': empty corpus"),
    "corpus path with a NUL": (
        'name: s\ntrainer: {corpus: "a\\0b"}\n',
        "a corpus path cannot contain a NUL character",
    ),
    "empty corpus file": (
        "name: s\ntrainer: {corpus: {tmp}/empty.txt}\n",
        "trainer.corpus: variant default: corpus {tmp}/empty.txt: file is empty",
    ),
    "odd-sized token file": (
        "name: s\ntrainer: {corpus: {tmp}/odd.bin}\n",
        "odd.bin: 3 bytes is not a whole number of uint16 tokens",
    ),
    "corpus too short for seq_len": (
        "name: s\ntrainer:\n  corpus: {tmp}/small.txt\n",
        "study.yaml:3: trainer.corpus: variant default: corpus {tmp}/small.txt is too short for seq_len 64",
    ),
    "seq_len too long for the builtin corpus": (
        "name: s\nscale:\n  seq_len: [64, 1000000]\n",
        "scale.seq_len[1]: variant default, seq_len=1000000: corpus builtin is too short for seq_len 1000000",
    ),
    # --- numbers written as strings ---
    "a swept number in quotes": (
        "name: s\nsweep:\n  lr: {values: ['1e-3', 2e-3]}\n",
        "study.yaml:3: sweep.lr.values[0]: '1e-3' is a string, but lr takes a number",
    ),
    "a scale width in quotes": (
        "name: s\nscale:\n  width: [64, '128']\n",
        "study.yaml:3: scale.width[1]: '128' is a string, but width takes a number",
    ),
    "a boolean swept for a number": (
        "name: s\nsweep:\n  warmup: {values: [0, true]}\n",
        "sweep.warmup.values[1]: True is a boolean, but warmup takes a number",
    ),
    # --- size: trials, files, aliases ---
    "a grid of 10^7 trials": (
        HUGE_GRID,
        f"study.yaml:2: sweep: the study plans 10839030 trials (1 variant x 1 scale point x 1 seed x 10839030 sweep settings); at most {DEFAULT_MAX_TRIALS}",
    ),
    "more trials than max_trials": (
        "name: s\nmax_trials: 10\nseeds: [0, 1, 2]\nsweep:\n  lr: {values: [0.001, 0.002, 0.004, 0.008]}\n",
        "study.yaml:2: max_trials: the study plans 12 trials (1 variant x 1 scale point x 3 seeds x 4 sweep settings), more than max_trials 10",
    ),
    "max_trials 0": (
        "name: s\nmax_trials: 0\n",
        "study.yaml:2: max_trials: Input should be greater than or equal to 1",
    ),
    "optuna with 10^9 samples": (
        "name: s\nsearch:\n  method: optuna\n  num_samples: 1000000000\nsweep:\n  lr: {loguniform: [0.0001, 0.1]}\n",
        "study.yaml:4: search.num_samples: the study plans 1000000000 trials",
    ),
    "alias bomb": (
        BOMB + "name: s\ntrainer: {lr: *i}\n",
        "not valid YAML: its aliases expand to more than 200000 values",
    ),
    "recursive alias": (
        "name: s\ntrainer: &t {lr: *t}\n",
        "study.yaml:2: not valid YAML: an alias refers to a node that contains it",
    ),
    "oversized file": (
        "name: s\ndescription: " + "x" * 300_000 + "\n",
        "300022 bytes; a study file may have at most 262144 bytes (256 KiB)",
    ),
    "nested 5000 deep": ("name: s\ndescription: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
    "an integer of 5000 digits": (
        "name: s\nseeds: [" + "1" * 5000 + "]\n",
        "study.yaml:2: not valid YAML: cannot read the value '1111",
    ),
    "an impossible date": (
        "name: 2024-13-45\n",
        "study.yaml:1: not valid YAML: cannot read the value '2024-13-45'",
    ),
    "a python tag": (
        "name: !!python/object:os.system x\n",
        "study.yaml:1: not valid YAML: could not determine a constructor",
    ),
    "not UTF-8": (b"name: s\ndescription: \xff\xfe\n", "not UTF-8 text"),
    "a megabyte of a wrong value": ("name: s\ntrainer:\n  lr: " + "z" * 200_000 + "\n", "lr='zzzzzzzz"),
    # --- sweeps that cannot run as written ---
    "optuna over a whole-number key": (
        "name: s\nsearch: {method: optuna}\nsweep:\n  warmup: {loguniform: [1, 100]}\n",
        "study.yaml:4: sweep.warmup.loguniform: warmup takes whole numbers, but optuna samples a loguniform sweep as a continuous range",
    ),
    "a uniform range reaching lr 0": (
        "name: s\nsearch: {method: optuna}\nsweep:\n  lr: {uniform: [0, 0.1]}\n",
        "study.yaml:4: sweep.lr.uniform: variant default, lr=0.0: lr=0.0: Input should be greater than 0",
    ),
    "a loguniform range past the lr cap": (
        "name: s\nsearch: {method: optuna}\nsweep:\n  lr: {loguniform: [0.001, 1e9]}\n",
        "sweep.lr.loguniform: variant default, lr=1000000000.0: lr=1000000000.0: Input should be less than or equal to 1000000",
    ),
    "an infinite log2_grid bound": (
        "name: s\nsweep:\n  lr: {log2_grid: [-10, .inf]}\n",
        "study.yaml:3: sweep.lr.log2_grid[1]: Input should be a finite number (got inf)",
    ),
    "a NaN step": (
        "name: s\nsweep:\n  lr:\n    log2_grid: [-10, -1]\n    step: .nan\n",
        "study.yaml:5: sweep.lr.step: Input should be a finite number",
    ),
    "a subnormal step": (
        "name: s\nsweep:\n  lr:\n    log2_grid: [-10, -1]\n    step: 1e-320\n",
        "study.yaml:4: sweep.lr.log2_grid: step 9.99989e-321 gives 1000000000000000 grid values; at most 1000",
    ),
    "resources.cpu .inf": (
        "name: s\nresources: {cpu: .inf}\n",
        "study.yaml:2: resources.cpu: Input should be a finite number",
    ),
    "noise_z .nan": ("name: s\nsearch: {noise_z: .nan}\n", "search.noise_z: Input should be a finite number"),
    # --- the mistakes the schema always caught ---
    "unknown top-level key": (
        "name: s\nsweeps: {lr: {values: [1]}}\n",
        "study.yaml:2: sweeps: unknown key 'sweeps'; allowed: name,",
    ),
    "trainer key typo": (
        "name: s\ntrainer:\n  depth: 2\n  widht: 64\n",
        "study.yaml:4: trainer.widht: unknown trainer key 'widht' (did you mean 'width'?)",
    ),
    "a 1000-character unknown key": (
        "name: s\ntrainer:\n  " + "q" * 1000 + ": 1\n",
        "unknown trainer key 'qqqq",
    ),
    "missing name": ("trainer: {depth: 2}\n", "study.yaml:1: name: required key is missing"),
    "seeds not a list": ("name: s\nseeds: abc\n", "study.yaml:2: seeds: Input should be a valid list"),
    "trainer not a mapping": (
        "name: s\ntrainer: [1, 2]\n",
        "study.yaml:2: trainer: Input should be a valid dictionary",
    ),
    "wrong type for a trainer key": (
        "name: s\ntrainer: {width: wide}\n",
        "width='wide': Input should be a valid integer",
    ),
    "duplicate key": (
        "name: s\ntrainer:\n  lr: 0.1\n  lr: 0.2\n",
        "study.yaml:4: trainer.lr: duplicate key 'lr'",
    ),
    "duplicate seed": ("name: s\nseeds: [0, 1, 0]\n", "study.yaml:2: seeds[2]: duplicate seed 0"),
    "duplicate swept value": (
        "name: s\nsweep:\n  lr: {values: [0.1, 0.2, 0.1]}\n",
        "sweep.lr.values[2]: duplicate value 0.1",
    ),
    "malformed YAML": ("name: s\ntrainer: {depth: 2\nscale: {width: [64]}\n", "not valid YAML"),
    "empty file": ("# nothing\n", "study.yaml: empty study file"),
    "a list, not a mapping": ("- name: s\n", "study.yaml:1: expected a mapping of study keys"),
    "a 200-character study name": ("name: " + "n" * 200 + "\n", "study.yaml:1: name: study name 'nnnn"),
    "seed in trainer": (
        "name: s\ntrainer:\n  seed: 3\n",
        "study.yaml:3: trainer.seed: 'seed' cannot be set in trainer",
    ),
    "head_dim does not divide width": (
        "name: s\ntrainer: {head_dim: 32}\nscale:\n  width: [64, 80]\n",
        "scale.width[1]: variant default, width=80: head_dim 32 must divide width 80",
    ),
    "mup without base_width": (
        "name: s\ntrainer:\n  depth: 2\n  parameterization: mup\n",
        "study.yaml:4: trainer.parameterization: variant default: parameterization 'mup' is width-relative: set base_width",
    ),
    "grid over a loguniform range": (
        "name: s\nsweep:\n  lr: {loguniform: [0.0001, 0.01]}\n",
        "sweep.lr.loguniform: loguniform is not enumerable",
    ),
    "adaptive with two keys": (
        "name: s\nsearch:\n  method: adaptive\nsweep:\n  lr: {log2_grid: [-3, -1]}\n  warmup: {values: [0, 1]}\n",
        "study.yaml:3: search.method: adaptive search sweeps exactly one key, got 2",
    ),
}

SUBPROCESS_CASES = [
    "betas above 1",
    "alias bomb",
    "a grid of 10^7 trials",
    "oversized file",
    "missing corpus among swept values",
]


@pytest.fixture
def corpus_dir(tmp_path: Path) -> Path:
    (tmp_path / "small.txt").write_text("hello world\n" * 10)
    (tmp_path / "big.txt").write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 4000)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "odd.bin").write_bytes(b"abc")
    return tmp_path


def write_study(folder: Path, text: str | bytes) -> Path:
    path = folder / "study.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text.replace("{tmp}", str(folder)))
    return path


def assert_refused(path: Path, code: int, stdout: str, stderr: str, results: Path) -> str:
    assert code == 2, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr[:2000]
    assert lines[0].startswith(f"error: {path}"), lines[0][:500]
    assert len(lines[0]) < 1000, lines[0][:2000]
    assert not results.exists()
    return lines[0]


def test_there_are_at_least_50_distinct_cases():
    assert len(CASES) >= 50
    texts = [text for text, _ in CASES.values()]
    assert len(set(texts)) == len(texts)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_study_is_one_line_exit_2_and_nothing_written(corpus_dir, case):
    text, expected = CASES[case]
    path = write_study(corpus_dir, text)
    results = corpus_dir / "results"
    start = time.monotonic()
    result = RUNNER.invoke(app, ["run", str(path), "--results", str(results)])
    elapsed = time.monotonic() - start
    assert isinstance(result.exception, SystemExit), result.exception
    line = assert_refused(path, result.exit_code, result.stdout, result.stderr, results)
    assert expected.replace("{tmp}", str(corpus_dir)) in line, line[:1000]
    assert elapsed < 10, f"{case}: {elapsed:.1f} s"


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_study_as_a_user_runs_it(corpus_dir, case):
    text, expected = CASES[case]
    path = write_study(corpus_dir, text)
    results = corpus_dir / "results"
    proc = subprocess.run(
        [*SWEEPER, "run", str(path), "--results", str(results)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = assert_refused(path, proc.returncode, proc.stdout, proc.stderr, results)
    assert expected.replace("{tmp}", str(corpus_dir)) in line, line[:1000]


# --- what is now accepted ---
def test_numbers_with_an_exponent_are_floats_and_the_study_runs(tmp_path):
    path = write_study(
        tmp_path,
        "name: s\ntrainer: {steps: 20, weight_decay: 1E-1}\nscale:\n  init_std: [2e-2, 4e-2]\n"
        "sweep:\n  lr: {values: [1e-3, 2e-3, 4.0e-3]}\n",
    )
    study = load_study(path)
    assert study.sweep["lr"].values == [0.001, 0.002, 0.004]
    assert all(isinstance(v, float) for v in study.sweep["lr"].values)
    assert study.scale["init_std"] == [0.02, 0.04]
    assert study.trainer["weight_decay"] == 0.1
    results = tmp_path / "results"
    result = RUNNER.invoke(app, ["run", str(path), "--results", str(results), "--dry-run", "--no-estimate"])
    assert result.exit_code == 0, result.stderr
    assert not results.exists()


def test_max_trials_raises_the_cap(tmp_path):
    text = HUGE_GRID.replace("name: s\n", "name: s\nmax_trials: 20000000\n")
    text = text.replace("  eps: {values: [1.0e-8, 1.0e-7, 1.0e-6]}\n", "")
    start = time.monotonic()
    study = load_study(write_study(tmp_path, text))
    assert study.trial_count() == 401 * 901 * 10
    assert time.monotonic() - start < 10  # validated per grid value, not per trial


# --- sweeper train and sweeper params read trainer configs the same way ---
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "mlp_ratio=.inf"], "error: --set: mlp_ratio=inf: Input should be a finite number"),
        (["--set", "betas=[2,3]"], "error: --set: betas.0=2: Input should be less than 1"),
        (["--set", "lr=.nan"], "error: --set: lr=nan: Input should be a finite number"),
        (
            ["--set", "seed=1e20"],
            "error: --set: seed=1e+20: Unable to parse input string as an integer",
        ),
        (
            ["--set", "width=1048576"],
            "error: --set: width=1048576: Input should be less than or equal to 65536",
        ),
    ],
)
@pytest.mark.parametrize("command", ["train", "params"])
def test_train_and_params_refuse_bad_values_in_one_line(command, args, expected):
    result = RUNNER.invoke(app, [command, *args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert lines == [lines[0]] and lines[0].startswith(expected), result.stderr[:2000]


def test_train_refuses_a_config_file_alias_bomb(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(BOMB + "lr: *i\n")
    result = RUNNER.invoke(app, ["train", "--config", str(path)])
    assert result.exit_code == 2
    assert (
        result.stderr.startswith(f"error: {path}: not valid YAML (line ")
        and "aliases expand" in result.stderr
    )


def test_train_subprocess_betas_one_line():
    proc = subprocess.run(
        [*SWEEPER, "train", "--set", "betas=[2,3]"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: --set: betas.0=2: Input should be less than 1"]


# --- the corpus check, against what loading the corpus does ---
def test_corpus_problem_names_the_key_at_fault(corpus_dir):
    assert corpus_problem("builtin") is None
    assert corpus_problem(str(corpus_dir / "big.txt"), 256, 64) is None
    key, msg = corpus_problem(str(corpus_dir / "nope.txt"))
    assert key == "corpus" and "no such file or folder" in msg
    key, msg = corpus_problem(str(corpus_dir / "big.txt"), vocab_size=100)
    assert key == "vocab_size" and "need >= 256" in msg
    key, msg = corpus_problem(str(corpus_dir / "small.txt"), seq_len=64)
    assert key == "seq_len" and "too short for seq_len 64" in msg
    key, msg = corpus_problem("~nosuchuser_sweeper/x.txt")
    assert key == "corpus"
    key, msg = corpus_problem("x" * 5000)
    assert key == "corpus" and len(msg) < 300


@pytest.mark.parametrize("n", [1, CHUNK - 1, CHUNK * 9, CHUNK * 9 + 5, CHUNK * 10 + 3, CHUNK * 23 + 17])
def test_split_sizes_match_the_built_split(tmp_path, n):
    path = tmp_path / f"t{n}.txt"
    path.write_bytes(b"a" * n)
    corpus = load_corpus(str(path), cache_dir=tmp_path / "cache")
    assert _split_sizes(n) == (len(corpus.train), len(corpus.val))
    assert VAL_EVERY == 10


def test_resources_larger_than_this_machine_are_refused_before_anything_is_written(tmp_path):
    import os

    cases = {f"resources: {{cpu: {(os.cpu_count() or 1) + 1}}}\n": "cores; at most"}
    if not _has_cuda():
        cases["resources: {gpu: 1}\n"] = "has no CUDA GPU"
    for body, expected in cases.items():
        path = write_study(tmp_path, f"name: s\n{body}")
        results = tmp_path / "results"
        result = RUNNER.invoke(app, ["run", str(path), "--results", str(results)])
        line = assert_refused(path, result.exit_code, result.stdout, result.stderr, results)
        assert expected in line, line


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
