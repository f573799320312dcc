"""The headless CLI: every command end to end on a tiny run; errors are one line, never a traceback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lmstudio import __version__
from lmstudio.cli import main
from lmstudio.matrix_export import NAN_RGB

TINY = [
    "--set",
    "model.n_layer=1",
    "--set",
    "model.n_embd=32",
    "--set",
    "model.n_head=2",
    "--set",
    "model.block_size=16",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.max_steps=12",
    "--set",
    "train.eval_interval=6",
    "--set",
    "train.eval_iters=2",
    "--set",
    "train.log_interval=3",
    "--set",
    "train.sample_interval=6",
    "--set",
    "train.sample_tokens=8",
    "--device",
    "cpu",
]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    old = {k: os.environ.get(k) for k in ("LMSTUDIO_RUNS", "LMSTUDIO_CACHE")}
    os.environ["LMSTUDIO_RUNS"], os.environ["LMSTUDIO_CACHE"] = str(root / "runs"), str(root / "cache")
    try:
        assert main(["train", "--preset", "tiny_tang", "--out", str(root / "runs" / "tiny"), *TINY]) == 0
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return root / "runs" / "tiny"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lmstudio: error: ")
    return lines[0]


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    assert "--preset" in capsys.readouterr().out


def test_train_json_prints_one_event_per_line(tmp_path, capsys):
    assert main(["train", "--preset", "tiny_tang", "--out", str(tmp_path / "r"), "--json", *TINY]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "Started" and kinds[-1] == "Finished"
    assert [e["step"] for e in events if e["event"] == "StepMetrics"] == [3, 6, 9, 12]
    assert [e["step"] for e in events if e["event"] == "EvalMetrics"] == [0, 6, 12]
    assert events[0]["config"]["train"]["max_steps"] == 12 and events[0]["device"].startswith("CPU")


def test_train_text_output_and_default_run_folder(tmp_path, capsys):
    assert (
        main(["train", "--preset", "tiny_tang", "--arch", "gru", "--set", "model.hidden_size=32", *TINY]) == 0
    )
    out = capsys.readouterr().out
    assert "step 12/12" in out and "eval at step 12" in out and "perplexity" in out
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "model.safetensors").is_file()
    assert json.loads((runs[0] / "config.json").read_text())["model"]["arch"] == "gru"


def test_resume_continues_a_run_with_more_steps(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    copy.mkdir()
    for p in run_dir.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert main(["train", "--resume", str(copy), "--set", "train.max_steps=15", "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["start_step"] == 12
    assert [e["step"] for e in events if e["event"] == "StepMetrics"] == [15]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--preset", "no_such_preset"], "no_such_preset"),
        (["train", "--preset", "tiny_tang", "--set", "train.lr=fast"], "train.lr"),
        (["train", "--preset", "tiny_tang", "--set", "train.nosuch=1"], "train.nosuch"),
        (["train", "--preset", "tiny_tang", "--set", "oops"], "key=value"),
        (["train", "--preset", "tiny_tang", "--set", "model.n_head=3"], "model.n_head"),
        (["train", "--resume", "/no/such/run"], "/no/such/run"),
        (["eval", "/no/such/run"], "/no/such/run"),
        (["generate", "/no/such/run", "--prompt", "x"], "/no/such/run"),
        (["corpus", "/no/such/file.txt"], "file.txt"),
    ],
)
def test_user_errors_are_one_line_and_exit_1(argv, words, capsys):
    assert main(argv) == 1
    assert words in one_error_line(capsys)


@pytest.mark.parametrize(
    "argv", [["train", "--arch", "cnn"], ["nosuchcommand"], ["generate"], ["eval", "x", "--iters", "many"]]
)
def test_usage_mistakes_are_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "--help" in one_error_line(capsys)


def test_a_failed_run_exits_1_with_its_message(tmp_path, capsys):
    code = main(
        [
            "train",
            "--preset",
            "tiny_tang",
            "--corpus",
            str(tmp_path / "missing.txt"),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 1
    assert "missing.txt" in capsys.readouterr().err


def test_refuses_to_overwrite_a_run(run_dir, capsys):
    assert main(["train", "--preset", "tiny_tang", "--out", str(run_dir)]) == 1
    assert "--resume" in one_error_line(capsys)


def test_eval_prints_loss_perplexity_and_accuracy(run_dir, capsys):
    assert main(["eval", str(run_dir), "--json", "--iters", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 12 and result["batches"] == 3
    assert result["val_ppl"] == pytest.approx(2.718281828 ** result["val_loss"], rel=1e-6)
    assert 0 <= result["val_acc"] <= 1
    assert main(["eval", str(run_dir), "--which", "best"]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "perplexity" in out and "accuracy" in out


def test_corpus_stats(capsys):
    assert main(["corpus", "tang300", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    text = (REPO / "resources" / "corpora" / "tang300.txt").read_text(encoding="utf-8")
    assert info["chars"] == len(text.replace("\r\n", "\n")) and info["builtin"] is True
    assert main(["corpus", "tang300"]) == 0
    assert "characters" in capsys.readouterr().out


def test_generate_is_repeatable_with_a_seed_and_streams(run_dir, capsys):
    args = ["generate", str(run_dir), "--prompt", "春", "--max-tokens", "10", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args + ["--stream"]) == 0
    assert capsys.readouterr().out == first
    assert first.startswith("春") and len(first.rstrip("\n")) > 1
    assert main(["generate", str(run_dir), "--temperature", "-0.5"]) == 1
    assert "temperature" in one_error_line(capsys)
    # temperature 0 is greedy decoding: the same text as top-k 1, whatever the seed
    greedy = ["generate", str(run_dir), "--prompt", "春", "--max-tokens", "10"]
    assert main(greedy + ["--temperature", "0", "--seed", "1"]) == 0
    by_argmax = capsys.readouterr().out
    assert main(greedy + ["--top-k", "1", "--seed", "2"]) == 0
    assert capsys.readouterr().out == by_argmax


def test_generate_json_prints_one_object_per_token(run_dir, capsys):
    args = [
        "generate",
        str(run_dir),
        "--prompt",
        "春",
        "--max-tokens",
        "40",
        "--seed",
        "3",
        "--temperature",
        "3",
    ]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 40
    assert "春" + "".join(r["text"] for r in rows) + "\n" == plain
    from lmstudio.engine.tokenizer import Tokenizer

    tok = Tokenizer.load(run_dir / "tokenizer.json")
    assert tok.decode([r["id"] for r in rows]) == "".join(r["text"] for r in rows)
    for r in rows:
        assert set(r) == {"id", "text", "prob", "unk", "masked", "sampled_prob"}
        assert r["unk"] == (r["id"] == 0) and 0 < r["prob"] <= 1 and r["masked"] == 0
        assert r["text"] == ("\ufffd" if r["unk"] else tok.decode([r["id"]]))
        assert 0 < r["sampled_prob"] <= 1


def test_generate_json_top_candidates_carry_both_distributions(run_dir, capsys):
    import torch

    from lmstudio.engine.sampling import prompt_ids
    from lmstudio.engine.session import Session

    args = ["generate", str(run_dir), "--prompt", "春", "--max-tokens", "6", "--seed", "2"]
    assert main(args + ["--json", "--top", "5", "--temperature", "0.3", "--top-k", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    session = Session.load(run_dir)
    ids = prompt_ids(session, "春")
    for r in rows:
        with torch.no_grad():
            logits = session.model(torch.tensor([ids]))[0][0, -1].double()
        kept = torch.topk(logits, 3).indices
        filtered = torch.full_like(logits, float("-inf"))
        filtered[kept] = logits[kept] / 0.3
        ref, raw = torch.softmax(filtered, -1), torch.softmax(logits, -1)
        assert len(r["top"]) in (5, 6) and r["id"] in [c["id"] for c in r["top"]]
        for c in r["top"]:
            assert c["prob"] == pytest.approx(float(raw[c["id"]]), abs=1e-5)
            assert c["sampled_prob"] == pytest.approx(float(ref[c["id"]]), abs=1e-5)
        assert r["sampled_prob"] == pytest.approx(float(ref[r["id"]]), abs=1e-5) and r["id"] in kept.tolist()
        ids.append(r["id"])
    assert main(args + ["--top", "3"]) == 1
    assert "--json" in one_error_line(capsys)


def test_inspect_writes_png_and_csv(run_dir, tmp_path, capsys):
    png, csv = tmp_path / "a.png", tmp_path / "a.csv"
    assert main(["inspect", str(run_dir), "--text", "床前明月光", "--out", str(png)]) == 0
    with Image.open(png) as picture:  # every head of layer 0, with the token labels
        assert picture.format == "PNG" and json.loads(picture.text["rows"]) == list("牀前明月光")
        tiles, cell = json.loads(picture.text["tiles"]), int(picture.text["cell"])
        assert len(tiles) > 1
        for x, y in tiles:  # the first query cannot see the last key: grey, not the colour of 0
            assert picture.convert("RGB").getpixel((x + 4 * cell + cell // 2, y + cell // 2)) == NAN_RGB
    assert main(["inspect", str(run_dir), "--text", "床前明月光", "--head", "1", "--out", str(csv)]) == 0
    rows = csv.read_text(encoding="utf-8").splitlines()
    # the tang300 run is in traditional characters: the simplified 床 is read as 牀, and a note says so
    assert len(rows) == 1 + 5 and rows[1].startswith("牀")
    assert "床→牀" in capsys.readouterr().err
    # attention rows are probability distributions over the keys so far
    first = [float(v) for v in rows[1].split(",")[1:] if v]
    assert sum(first) == pytest.approx(1.0, abs=1e-4)
    capsys.readouterr()
    assert main(["inspect", str(run_dir), "--text", "牀前", "--layer", "5", "--out", str(png)]) == 1
    assert "--layer" in one_error_line(capsys)
    assert main(["inspect", str(run_dir), "--text", "牀前", "--out", str(tmp_path / "a.jpg")]) == 1
    assert ".png" in one_error_line(capsys)


def test_inspect_lens_and_embeddings(run_dir, tmp_path, capsys):
    import csv as csv_module

    from lmstudio.engine.lens import logit_lens
    from lmstudio.engine.session import Session

    lens_csv, lens_png = tmp_path / "lens.csv", tmp_path / "lens.png"
    assert (
        main(["inspect", str(run_dir), "--what", "lens", "--text", "床前明月光", "--out", str(lens_csv)]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    rows = list(csv_module.DictReader(lens_csv.open(encoding="utf-8")))
    session = Session.load(run_dir)
    n_layer = session.config.model.n_layer
    # simplified 床 is fitted to the traditional run as 牀 (the corpus's character)
    assert len(rows) == (n_layer + 1) * 5 and rows[0]["row"] == "embedding" and rows[0]["token"] == "牀"
    assert rows[0]["actual_next"] == "前" and rows[4]["actual_next"] == ""
    ref = logit_lens(session, "床前明月光")
    last = [r for r in rows if r["row"] == ref.rows[-1]]
    assert [r["top1"] for r in last] == [ref.label(i) for i in ref.top_ids[-1, :, 0]]
    assert main(["inspect", str(run_dir), "--what", "lens", "--text", "床前", "--out", str(lens_png)]) == 0
    assert lens_png.read_bytes().startswith(b"\x89PNG")
    emb_csv, emb_png = tmp_path / "emb.csv", tmp_path / "emb.png"
    assert main(["inspect", str(run_dir), "--what", "embeddings", "--out", str(emb_csv)]) == 0
    assert "embedding" in capsys.readouterr().out
    table = list(csv_module.DictReader(emb_csv.open(encoding="utf-8")))
    assert len(table) == session.tokenizer.vocab_size and table[0]["kind"] == "unknown"
    assert sum(int(r["count"]) for r in table) > 1000  # frequencies from the run's corpus
    assert (
        main(
            ["inspect", str(run_dir), "--what", "embeddings", "--embedding", "output", "--out", str(emb_png)]
        )
        == 0
    )
    assert emb_png.read_bytes().startswith(b"\x89PNG")
    assert main(["inspect", str(run_dir), "--what", "lens", "--out", str(lens_csv)]) == 1
    assert "--text" in one_error_line(capsys)


def test_runs_and_presets_lists(run_dir, capsys):
    assert main(["runs", "--root", str(run_dir.parent), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(run_dir)] and rows[0]["steps"] == 12
    # how the run ended, from the status.json the train command wrote
    assert (rows[0]["state"], rows[0]["state_text"], rows[0]["max_steps"]) == ("finished", "finished", 12)
    assert rows[0]["elapsed"] > 0 and rows[0]["name"] == "tiny"
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("tiny_tang", "baby_shakespeare", "gpt_shakespeare", "lstm_shakespeare", "gru_shakespeare"):
        assert name in out


def _env(tmp_path) -> dict:
    env = dict(
        os.environ,
        LMSTUDIO_RUNS=str(tmp_path / "runs"),
        LMSTUDIO_CACHE=str(tmp_path / "cache"),
        OMP_NUM_THREADS="1",
    )
    env.pop("DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)
    return env


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lmstudio",
            "train",
            "--preset",
            "tiny_tang",
            "--out",
            str(out),
            "--json",
            *TINY,
            "--set",
            "train.max_steps=100000",
            "--set",
            "train.log_interval=1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        cwd=REPO,
    )
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "StepMetrics":
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    events = [json.loads(line) for line in rest.splitlines()]
    assert events[-1]["event"] == "Finished" and events[-1]["reason"] == "stopped"
    assert events[-2]["event"] == "Checkpointed"
    assert "Traceback" not in err and (out / "train_state.pt").is_file()
    listed = subprocess.run(
        [sys.executable, "-m", "lmstudio", "runs", "--root", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=REPO,
        timeout=120,
    )
    row = json.loads(listed.stdout)
    step = events[-1]["step"]
    assert (row["state"], row["state_text"]) == ("stopped", f"stopped at {step:,} of 100,000")


def test_headless_commands_never_import_qt(tmp_path):
    code = (
        "import sys; from lmstudio.cli import main; rc = main(['corpus', 'tang300']); "
        "assert rc == 0; assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported'"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
