"""The bake-off: the five architectures trained one after another on the same text for the same time.

RNN, LSTM, GRU, the convolutional model and the Transformer, each sized to about 0.8M parameters at
character level (the baby GPT's size), share the corpus, the tokenizer (trained once), the context, the
batch size, the seed and the wall-clock budget (``train.max_time``, so the cosine decay of every run ends
with its time). Each run is an ordinary run folder, so the Runs tab overlays their curves by time; each is
scored on the whole validation split when its time is up (engine/full_eval.py), and a sample is drawn
from its final weights with one fixed seed.

What differs between them is only what each family needs to train well: the learning rate (the
Transformer's from nanoGPT's baby config as tuned in this project; the others from measurements in
docs/benchmarks.md).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmstudio.config import RunConfig
from lmstudio.events import Event

ARCH_ORDER = ("rnn", "lstm", "gru", "conv", "transformer")
# about 0.8M parameters each with a character vocabulary (~65 symbols); widths of the recurrent models
# chosen so they match the Transformer's 4 x 128 (docs/models.md lists the counts)
SHAPES: dict[str, list[str]] = {
    "rnn": ["model.n_layer=2", "model.n_embd=448", "model.hidden_size=448", "train.lr=1e-3"],
    "lstm": ["model.n_layer=2", "model.n_embd=224", "model.hidden_size=224", "train.lr=3e-3"],
    "gru": ["model.n_layer=2", "model.n_embd=256", "model.hidden_size=256", "train.lr=3e-3"],
    "conv": [
        "model.n_layer=7",
        "model.n_embd=128",
        "model.kernel_size=3",
        "model.dilation_cycle=5",
        "train.lr=2e-3",
    ],
    "transformer": [
        "model.n_layer=4",
        "model.n_embd=128",
        "model.n_head=4",
        "model.bias=false",
        "train.lr=2e-3",
    ],
}
COMMON = [
    "model.block_size=64",
    "model.dropout=0.0",
    "model.tie_weights=true",
    "train.batch_size=32",
    "train.max_steps=10000000",
    "train.warmup_steps=50",
    "train.min_lr=1e-4",
    "train.schedule=cosine",
    "train.weight_decay=0.0",
    "train.grad_clip=1.0",
    "train.eval_interval=100",
    "train.eval_iters=10",
    "train.log_interval=10",
    "train.sample_interval=0",
    "train.full_eval=true",
]
SAMPLE_TOKENS = 160
SAMPLE_SEED = 1


@dataclass(frozen=True)
class BakeoffRow:
    arch: str
    run_dir: str
    n_params: int
    steps: int
    seconds: float  # training time the run used (its budget, give or take one step and the final save)
    tokens_per_s: float  # median over the run's reports
    estimate: float | None  # the last running estimate of the validation loss (eval_iters batches)
    full_val_loss: float | None  # over the whole validation split
    sample: str
    failed: str = ""  # why the run did not finish, if it did not


@dataclass(frozen=True)
class BakeoffStarted(Event):
    """One architecture's run begins (``index`` of ``total``, 0-based)."""

    arch: str
    index: int
    total: int
    run_dir: str
    budget: float


@dataclass(frozen=True)
class BakeoffDone(Event):
    corpus: str
    budget: float
    rows: list = field(default_factory=list)  # BakeoffRow, in run order


def bakeoff_config(
    arch: str, corpus: str, budget: float, *, tokenizer: str = "char", seed: int = 1337
) -> RunConfig:
    """The run settings of one contestant; ``budget`` seconds of training."""
    if arch not in SHAPES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCH_ORDER)}")
    overrides = [
        f"corpus.source={corpus}",
        f"tokenizer.kind={tokenizer}",
        f"model.arch={arch}",
        f"train.max_time={budget}",
        f"train.seed={seed}",
        *COMMON,
        *SHAPES[arch],
    ]
    return RunConfig(name=f"bakeoff-{Path(corpus).stem}-{arch}").override(overrides).validate()


def run_bakeoff(
    corpus: str,
    budget: float,
    runs_root: str | Path,
    *,
    archs: tuple[str, ...] = ARCH_ORDER,
    tokenizer: str = "char",
    seed: int = 1337,
    control=None,
    overrides: list[str] | None = None,
    cache_dir: str | Path | None = None,
) -> Iterator[Event]:
    """Train each of ``archs`` for ``budget`` seconds into new run folders under ``runs_root``.

    Yields ``BakeoffStarted``, then that run's own trainer events, for each architecture, and finally a
    ``BakeoffDone`` with the table. ``control`` (a TrainControl) stops the whole bake-off: the run in
    progress ends as a stopped run and the remaining ones are skipped. ``overrides`` (dotted settings)
    apply to every contestant (tests use them to shrink the models).
    """
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine.data import prepare_data
    from lmstudio.engine.trainer import TrainControl, Trainer

    control = control or TrainControl()
    configs = [bakeoff_config(a, corpus, budget, tokenizer=tokenizer, seed=seed) for a in archs]
    if overrides:
        configs = [c.override(overrides).validate() for c in configs]
    # one tokenizer for all: trained once on the corpus, handed to every trainer
    from lmstudio.engine.data import Cancelled

    try:
        tok, _ = prepare_data(configs[0], cache_dir=cache_dir, cancel=control.stop_event)
    except Cancelled:
        yield BakeoffDone(corpus=corpus, budget=budget, rows=[])  # stopped before anything trained
        return
    rows: list[BakeoffRow] = []
    for index, cfg in enumerate(configs):
        if control.stopping:
            break
        run_dir = ckpt.new_run_dir(runs_root, cfg.name)
        yield BakeoffStarted(cfg.model.arch, index, len(configs), str(run_dir), budget)
        trainer = Trainer(cfg, run_dir, control=control, tokenizer=tok, cache_dir=cache_dir)
        seen: dict = {"tps": [], "estimate": None, "full": None, "n_params": 0, "failed": "", "elapsed": 0.0}
        for event in trainer.run():
            _note(seen, event)
            yield event
        rows.append(
            BakeoffRow(
                arch=cfg.model.arch,
                run_dir=str(run_dir),
                n_params=seen["n_params"],
                steps=trainer.step,
                seconds=seen["elapsed"],
                tokens_per_s=statistics.median(seen["tps"]) if seen["tps"] else 0.0,
                estimate=seen["estimate"],
                full_val_loss=seen["full"],
                sample=_sample(trainer) if not seen["failed"] else "",
                failed=seen["failed"],
            )
        )
    yield BakeoffDone(corpus=corpus, budget=budget, rows=rows)


def _note(seen: dict, event) -> None:
    kind = type(event).__name__
    if kind == "Started":
        seen["n_params"] = event.n_params
    elif kind == "StepMetrics":
        seen["tps"].append(event.tokens_per_s)
    elif kind == "EvalMetrics":
        seen["estimate"] = event.val_loss
    elif kind == "FullEvalMetrics":
        seen["full"] = event.val_loss
    elif kind == "Finished":
        seen["elapsed"] = event.elapsed
    elif kind == "Failed":
        seen["failed"] = event.message


def _sample(trainer) -> str:
    """A fixed-seed sample from the final weights (the same prompt and seed for every contestant)."""
    from lmstudio.engine.train_eval import training_sample

    parts = trainer.parts
    if parts is None:
        return ""
    # training_sample seeds with seed + step: make it the same for all
    train = dataclasses.replace(parts.config.train, sample_tokens=SAMPLE_TOKENS, seed=SAMPLE_SEED)
    return training_sample(parts.model, parts.tokenizer, dataclasses.replace(parts.config, train=train), 0)


# ---- the table --------------------------------------------------------------------------------------
def table_markdown(rows: list[BakeoffRow], sample_chars: int = 60) -> str:
    """The bake-off as a Markdown table (architecture, parameters, tokens/s, losses, a sample)."""
    lines = [
        "| architecture | parameters | steps | tokens/s | val loss (estimate) | val loss (full split) | sample |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        sample = r.sample[:sample_chars].replace("\n", " / ").replace("|", "\\|")
        lines.append(
            f"| {r.arch} | {r.n_params:,} | {r.steps:,} | {r.tokens_per_s:,.0f} | {_num(r.estimate)} | "
            f"{_num(r.full_val_loss)} | {sample if not r.failed else 'failed: ' + r.failed[:60]} |"
        )
    return "\n".join(lines)


def curve_table(run_dirs: dict[str, str], budget: float, points: int = 5) -> str:
    """The validation curves overlaid by time, as text: the latest running estimate at each time mark,
    and the final one (taken when the time was up)."""
    from lmstudio.engine.checkpoint import read_metrics

    marks = [budget * (i + 1) / (points + 1) for i in range(points)]
    head = " | ".join(f"{m:.0f} s" if budget >= 10 else f"{m:.1f} s" for m in marks)
    lines = [f"| architecture | {head} | end |", "|---|" + "---:|" * (points + 1)]
    for arch, run_dir in run_dirs.items():
        evals = [r for r in read_metrics(run_dir) if r.get("event") == "EvalMetrics"]
        cells = []
        for m in marks:
            before = [r for r in evals if (r.get("elapsed") or 0) <= m]
            cells.append(_num(before[-1]["val_loss"]) if before else "–")
        cells.append(_num(evals[-1]["val_loss"]) if evals else "–")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "–"
