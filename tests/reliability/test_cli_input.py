"""The CLI under odd input, in real processes of ``python -m lmstudio``: every number option out of range, a
strict UTF-8 terminal meeting text that is not UTF-8, and a relative corpus path used from another folder.
Each is one line on stderr (exit 1, or 2 for a usage mistake), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import copy_run

REPO = Path(__file__).resolve().parents[2]
TINY_CLI = [  # the tiny_tang preset shrunk to a second of training
    *("--preset", "tiny_tang", "--device", "cpu"),
    *("--set", "model.n_layer=1", "--set", "model.n_embd=16", "--set", "model.n_head=2"),
    *("--set", "model.block_size=8", "--set", "train.batch_size=4", "--set", "train.max_steps=4"),
    *("--set", "train.eval_interval=2", "--set", "train.eval_iters=1", "--set", "train.sample_interval=0"),
]


def lmstudio(*args, cwd=REPO, env_extra=None, timeout=240) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "lmstudio", *args], capture_output=True, cwd=cwd, env=env, timeout=timeout
    )


def one_error_line(done: subprocess.CompletedProcess) -> str:
    err = done.stderr.decode("utf-8", "replace").strip()
    assert "Traceback" not in err, err[-3000:]
    assert len(err.splitlines()) == 1 and err.startswith("lmstudio: error: "), err[-3000:]
    return err


# (argv after the command and a run folder where it takes one, the words the message must hold)
OUT_OF_RANGE = {
    "eval --iters 1e11": (["eval", "RUN", "--iters", "1e11"], "--iters"),
    "eval --iters 10**11": (
        ["eval", "RUN", "--iters", "100000000000"],
        "--iters must be between 1 and 10000",
    ),
    "eval --iters 0": (["eval", "RUN", "--iters", "0"], "--iters must be between 1 and 10000"),
    "generate --max-tokens": (["generate", "RUN", "--max-tokens", "1000000000"], "--max-tokens"),
    "generate --temperature": (["generate", "RUN", "--temperature", "-1"], "--temperature"),
    "generate --top-k": (["generate", "RUN", "--top-k", "-3"], "--top-k"),
    "generate --top-p": (["generate", "RUN", "--top-p", "2"], "--top-p"),
    "generate --seed": (["generate", "RUN", "--seed", "-5"], "--seed"),
    "generate --top": (["generate", "RUN", "--json", "--top", "1000000000"], "--top"),
    "inspect --layer": (
        ["inspect", "RUN", "--text", "ab", "--layer", "99", "--out", "OUT.csv"],
        "--layer 99",
    ),
    "inspect --head": (["inspect", "RUN", "--text", "ab", "--head", "99", "--out", "OUT.csv"], "--head 99"),
    "bakeoff --budget huge": (["bakeoff", "--budget", "1e9"], "--budget"),
    "bakeoff --budget 0": (["bakeoff", "--budget", "0"], "--budget"),
    "bakeoff --seed": (["bakeoff", "--seed", "-1"], "--seed"),
    "train --nproc 0": (["train", "--nproc", "0"], "--nproc"),
    "train --nproc huge": (["train", "--nproc", "100000", "--device", "cpu"], "--nproc 100000"),
    "train --set": (["train", "--set", "train.eval_iters=100000000000"], "train.eval_iters"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", OUT_OF_RANGE)
def test_every_cli_number_out_of_range_is_refused_in_one_line(finished_runs, tmp_path, case):
    argv, words = OUT_OF_RANGE[case]
    run = str(finished_runs["transformer"])
    argv = [run if a == "RUN" else str(tmp_path / a) if a.startswith("OUT") else a for a in argv]
    done = lmstudio(*argv, env_extra={"LMSTUDIO_RUNS": str(tmp_path / "runs")}, timeout=120)
    assert done.returncode in (1, 2), (done.returncode, done.stderr[-2000:])
    assert words in one_error_line(done)
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("OUT*"))  # nothing started


@pytest.mark.slow
def test_a_strict_utf8_terminal_and_text_that_is_not_utf8_print_no_traceback(finished_runs, tmp_path):
    """A byte that is not UTF-8 in an argument arrives as a lone surrogate; printing it to a strict UTF-8
    stream would raise UnicodeEncodeError. **Fixed**: tracebacks in generate and with such a path."""
    strict = {"PYTHONIOENCODING": "utf-8:strict", "LMSTUDIO_RUNS": str(tmp_path / "runs")}
    run = copy_run(finished_runs["transformer"], tmp_path / "run")
    done = lmstudio(
        "generate", str(run), "--prompt", b"ab\xffcd", "--max-tokens", "5", "--seed", "1", "--stream",
        env_extra=strict,
    )  # fmt: skip
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.startswith(b"ab\\udcffcd")  # the odd byte shown, escaped
    corpus = os.path.join(os.fsencode(tmp_path), b"caf\xe9.txt")  # a Latin-1 file name
    with open(corpus, "wb") as f:
        f.write(b"To be, or not to be.\n" * 50)
    done = lmstudio("corpus", corpus, env_extra=strict)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-2000:]
    assert b"caf\\udce9.txt" in done.stdout
    done = lmstudio("train", "--corpus", corpus, "--out", str(tmp_path / "r"), *TINY_CLI, env_extra=strict)
    assert done.returncode == 1 and "not UTF-8" in one_error_line(done)


@pytest.mark.slow
def test_a_relative_corpus_path_is_recorded_absolute_and_resumes_from_another_folder(tmp_path):
    here, elsewhere, run = tmp_path / "texts", tmp_path / "elsewhere", tmp_path / "run"
    here.mkdir()
    elsewhere.mkdir()
    (here / "mine.txt").write_text("To be, or not to be, that is the question.\n" * 40, encoding="utf-8")
    env = {"LMSTUDIO_RUNS": str(tmp_path / "runs"), "LMSTUDIO_CACHE": str(tmp_path / "cache")}
    done = lmstudio("train", "--corpus", "mine.txt", "--out", str(run), *TINY_CLI, cwd=here, env_extra=env)
    assert done.returncode == 0, done.stderr[-2000:]
    source = json.loads((run / "config.json").read_text())["corpus"]["source"]
    assert source == str((here / "mine.txt").resolve())
    done = lmstudio(
        "train", "--resume", str(run), "--set", "train.max_steps=6", cwd=elsewhere, env_extra=env
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    from lmstudio.engine import checkpoint as ckpt

    assert ckpt.load_train_state(run)["step"] == 6
