"""The training loop: schedule, optimizer groups, events, determinism, exact resume, control, faults."""

from __future__ import annotations

import copy
import math
import threading

import pytest
import torch
import torch.nn.functional as F

from lmstudio.config import RunConfig, TrainConfig
from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine import models as models_module
from lmstudio.engine import train_step
from lmstudio.engine.schedule import build_optimizer, lr_at, param_groups
from lmstudio.engine.trainer import TrainControl, Trainer
from lmstudio.events import (
    Checkpointed,
    EvalMetrics,
    Failed,
    Finished,
    Notice,
    Started,
    StateChanged,
    StepMetrics,
)


def tiny_config(*overrides: str) -> RunConfig:
    base = [
        "corpus.source=tang300",
        "tokenizer.kind=char",
        "model.arch=transformer",
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=32",
        "model.block_size=16",
        "train.batch_size=8",
        "train.max_steps=30",
        "train.log_interval=1",
        "train.eval_interval=10",
        "train.eval_iters=2",
        "train.sample_interval=0",
        "train.warmup_steps=5",
        "train.lr=3e-3",
        "train.min_lr=3e-4",
        "train.device=cpu",
        "train.seed=7",
    ]
    return RunConfig(name="t").override(base + list(overrides)).validate()


def run_all(trainer: Trainer, on_event=None) -> list:
    events = []
    for event in trainer.run():
        events.append(event)
        if on_event is not None:
            on_event(event)
    return events


def step_losses(events) -> dict[int, float]:
    return {e.step: e.loss for e in events if isinstance(e, StepMetrics)}


# ---- schedule and optimizer ---------------------------------------------------------------------------
def test_schedule_warms_up_linearly_then_follows_a_cosine_to_the_floor():
    t = TrainConfig(max_steps=110, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, t) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_at(4, t) == pytest.approx(0.5)
    assert lr_at(10, t) == pytest.approx(1.0)  # start of the decay
    assert lr_at(60, t) == pytest.approx(0.55)  # half way: floor + (peak - floor) / 2
    assert lr_at(35, t) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_at(110, t) == pytest.approx(0.1) and lr_at(500, t) == pytest.approx(0.1)
    const = TrainConfig(max_steps=110, warmup_steps=10, lr=1.0, min_lr=0.1, schedule="constant")
    assert lr_at(9, const) == pytest.approx(1.0) and lr_at(100, const) == 1.0
    # a new peak set mid-run keeps the shape; the floor never exceeds it
    assert lr_at(60, t, peak=0.05) == pytest.approx(0.05)
    assert lr_at(60, t, peak=2.0) == pytest.approx(0.1 + 1.9 * 0.5)


@pytest.mark.parametrize("arch", ["transformer", "lstm"])
def test_weight_decay_applies_to_matrices_only(arch):
    cfg = tiny_config(f"model.arch={arch}", "model.hidden_size=32", "model.vocab_size=50").model
    model = models_module.build_model(cfg)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    for n, p in model.named_parameters():
        assert (n in decayed) == (p.dim() >= 2), n
    assert any(n.endswith("bias") for n in kept)  # biases (and norm gains) exist and are spared
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_optimizers_follow_the_settings():
    model = torch.nn.Linear(4, 4)
    adam = build_optimizer(model, TrainConfig(beta1=0.8, beta2=0.95), torch.device("cpu"))
    assert isinstance(adam, torch.optim.AdamW) and adam.defaults["betas"] == (0.8, 0.95)
    assert adam.defaults["fused"] is True  # fused kernels on the CPU too (bench/vs_nanogpt.py)
    sgd = build_optimizer(model, TrainConfig(optimizer="sgd", beta1=0.7), torch.device("cpu"))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.7


def test_fused_adamw_steps_like_torchs_reference_adamw():
    """The fused kernels the trainer picks move the weights as torch's default (foreach) AdamW does."""
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
    b, before = copy.deepcopy(a), copy.deepcopy(a)
    fused = build_optimizer(a, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    reference = torch.optim.AdamW(param_groups(b, 0.1), lr=TrainConfig().lr, betas=(0.9, 0.99), foreach=True)
    assert fused.defaults["betas"] == (0.9, 0.99)
    for _ in range(5):
        x = torch.randn(4, 8)
        for model, opt in ((a, fused), (b, reference)):
            model(x).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb)
    assert not torch.equal(a[0].weight, before[0].weight)  # the weights did move


# ---- a whole run --------------------------------------------------------------------------------------
def test_a_run_reports_every_step_evaluates_and_checkpoints(tmp_path):
    cfg = tiny_config("train.sample_interval=15", "train.sample_tokens=12")
    events = run_all(Trainer(cfg, tmp_path / "run"))
    assert isinstance(events[0], Started) and events[0].n_params > 0 and events[0].device.startswith("CPU")
    assert isinstance(events[-1], Finished) and events[-1].reason == "completed" and events[-1].step == 30
    assert sorted(step_losses(events)) == list(range(1, 31))
    steps = [e for e in events if isinstance(e, StepMetrics)]
    assert all(e.tokens_per_s > 0 and e.grad_norm > 0 and e.eta >= 0 for e in steps)
    assert steps[0].lr == pytest.approx(3e-3 / 5) and steps[4].lr == pytest.approx(3e-3)
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    assert [e.step for e in evals] == [0, 10, 20, 30]  # step 0: the untrained model
    vocab = events[0].config["model"]["vocab_size"]
    assert evals[0].val_loss == pytest.approx(math.log(vocab), rel=0.2)  # about ln V before learning
    for e in evals:
        assert e.val_ppl == pytest.approx(math.exp(e.val_loss))
        assert 0.0 <= e.val_acc <= 1.0
    assert evals[-1].val_loss < evals[0].val_loss  # it learns
    # char tokenizer: one token per character, so bits per character is the loss in bits
    assert evals[-1].val_bpc == pytest.approx(evals[-1].val_loss / math.log(2))
    samples = [e for e in events if hasattr(e, "text")]
    assert [s.step for s in samples] == [15, 30] and all(isinstance(s.text, str) for s in samples)
    assert [e.step for e in events if isinstance(e, Checkpointed)] == [10, 20, 30]
    run = tmp_path / "run"
    for name in ("config.json", "tokenizer.json", "model.safetensors", "best.safetensors", "train_state.pt"):
        assert (run / name).is_file(), name
    metrics = ckpt.read_metrics(run)
    assert len([m for m in metrics if m["event"] == "StepMetrics"]) == 30
    assert [m["val_loss"] for m in metrics if m["event"] == "EvalMetrics"] == [e.val_loss for e in evals]
    assert len(ckpt.read_samples(run)) == 2
    for e in events:  # every event is plain data
        assert not any(isinstance(v, torch.Tensor) for v in e.to_dict().values())


def test_eval_metrics_match_a_direct_recomputation(tmp_path):
    """Loss and accuracy of the final evaluation, recomputed from the saved weights on the same batches."""
    from lmstudio.engine.data import Batcher, prepare_data
    from lmstudio.engine.session import Session

    cfg = tiny_config("train.max_steps=10", "train.eval_iters=3")
    events = run_all(Trainer(cfg, tmp_path / "run", cache_dir=tmp_path / "cache"))
    final = [e for e in events if isinstance(e, EvalMetrics)][-1]
    session = Session.load(tmp_path / "run")
    _, data = prepare_data(session.config, tokenizer=session.tokenizer, cache_dir=tmp_path / "cache")
    batcher = Batcher(data, 8, 16, cfg.train.seed + 1)
    losses, correct, count = [], 0, 0
    with torch.no_grad():
        for _ in range(3):
            x, y = batcher.get("val", "cpu")
            logits, _ = session.model(x)
            losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item())
            correct += (logits.argmax(-1) == y).sum().item()
            count += y.numel()
    assert final.val_loss == pytest.approx(sum(losses) / 3, rel=1e-5)
    assert final.val_acc == pytest.approx(correct / count)


def test_same_seed_gives_the_same_loss_at_every_step(tmp_path):
    settings = ("model.dropout=0.1", "train.max_steps=12", "train.eval_interval=6")
    a = step_losses(run_all(Trainer(tiny_config(*settings), tmp_path / "a")))
    b = step_losses(run_all(Trainer(tiny_config(*settings), tmp_path / "b")))
    c = step_losses(run_all(Trainer(tiny_config(*settings, "train.seed=8"), tmp_path / "c")))
    assert a == b
    assert a != c


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_stop_and_resume_continues_the_exact_same_curve(tmp_path, arch):
    settings = (
        f"model.arch={arch}",
        "model.hidden_size=32",
        "model.dropout=0.1",
        "train.max_steps=18",
        "train.eval_interval=8",
        "train.sample_interval=6",
        "train.sample_tokens=5",
    )
    full = run_all(Trainer(tiny_config(*settings), tmp_path / "full"))
    control = TrainControl()

    def stop_at_11(event):
        if isinstance(event, StepMetrics) and event.step == 11:
            control.stop()

    first = run_all(Trainer(tiny_config(*settings), tmp_path / "split", control=control), stop_at_11)
    assert isinstance(first[-1], Finished) and first[-1].reason == "stopped" and first[-1].step == 11
    assert isinstance(first[-2], Checkpointed) and first[-2].step == 11
    second = run_all(Trainer(tiny_config(*settings), tmp_path / "split", resume=True))
    assert second[0].start_step == 11
    expected = step_losses(full)
    assert step_losses(first) == {s: v for s, v in expected.items() if s <= 11}
    assert step_losses(second) == {s: v for s, v in expected.items() if s > 11}
    evals = lambda evs: [(e.step, e.val_loss) for e in evs if isinstance(e, EvalMetrics)]  # noqa: E731
    assert evals(first) + evals(second) == evals(full)
    # the history on disk reads as one run
    logged = [m["step"] for m in ckpt.read_metrics(tmp_path / "split") if m["event"] == "StepMetrics"]
    assert logged == list(range(1, 19))


def test_resume_refuses_a_different_model(tmp_path):
    control = TrainControl()
    run_all(
        Trainer(tiny_config(), tmp_path / "run", control=control),
        lambda e: control.stop() if isinstance(e, StepMetrics) else None,
    )
    events = run_all(Trainer(tiny_config("model.n_embd=64"), tmp_path / "run", resume=True))
    assert isinstance(events[-1], Failed) and events[-1].kind == "config" and "model" in events[-1].message


def test_gradient_accumulation_averages_micro_batch_gradients(tmp_path):
    """Two micro-batches of 4 give the gradient of the mean loss over all 8 sequences."""
    cfg = tiny_config("train.batch_size=4", "train.grad_accum=2")
    trainer = Trainer(cfg, tmp_path / "run")
    trainer._setup()
    assert cfg == tiny_config(
        "train.batch_size=4", "train.grad_accum=2"
    )  # the caller's settings are untouched
    x = torch.randint(0, trainer.config.model.vocab_size, (8, 16), generator=torch.Generator().manual_seed(0))
    y = torch.roll(x, -1, dims=1)
    halves = iter([(x[:4], y[:4]), (x[4:], y[4:])])
    trainer.parts.batcher.get = lambda split, device: next(halves)
    loss = train_step.micro_batches(trainer.parts, trainer.dist, grad_accum=2)
    got = {n: p.grad.clone() for n, p in trainer.model.named_parameters()}
    trainer.model.zero_grad(set_to_none=True)
    _, ref_loss = trainer.model(x, y)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    for n, p in trainer.model.named_parameters():
        torch.testing.assert_close(got[n], p.grad, rtol=1e-4, atol=1e-6)


def test_clipping_reports_the_norm_before_clipping(tmp_path):
    trainer = Trainer(tiny_config("train.grad_clip=0.01"), tmp_path / "run")
    trainer._setup()
    params = list(trainer.model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    before = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    norm = train_step.clip_gradients(trainer.parts, params, clip=0.01, need_norm=True)
    after = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    assert float(norm) == pytest.approx(before.item(), rel=1e-5)
    assert after.item() == pytest.approx(0.01, rel=1e-3)


def test_sgd_trains_too(tmp_path):
    events = run_all(
        Trainer(tiny_config("train.optimizer=sgd", "train.lr=0.3", "train.min_lr=0.03"), tmp_path / "run")
    )
    losses = step_losses(events)
    assert isinstance(events[-1], Finished) and losses[30] < losses[1]


# ---- control from another thread -------------------------------------------------------------------
def test_pause_blocks_until_resumed_and_a_new_lr_applies_at_the_next_step(tmp_path):
    control = TrainControl()
    cfg = tiny_config("train.schedule=constant", "train.warmup_steps=0", "train.max_steps=50")
    gen = Trainer(cfg, tmp_path / "run", control=control).run()
    for event in gen:
        if isinstance(event, StepMetrics) and event.step == 3:
            control.pause()
            break
    assert next(gen) == StateChanged("paused", 3)  # took effect before step 4
    box = {}
    waiter = threading.Thread(target=lambda: box.setdefault("event", next(gen)))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and control.paused  # blocked while paused, not spinning through steps
    control.set_lr(1e-4)
    control.resume()
    waiter.join(timeout=30)
    assert box["event"] == StateChanged("running", 3)
    step4 = next(gen)
    assert isinstance(step4, StepMetrics) and step4.step == 4 and step4.lr == pytest.approx(1e-4)
    control.pause()
    assert next(gen) == StateChanged("paused", 4)
    waiter = threading.Thread(target=lambda: box.__setitem__("event", next(gen)))
    waiter.start()
    control.stop()  # wakes the paused loop, which saves and finishes
    waiter.join(timeout=30)
    assert box["event"] == Checkpointed(step=4, path=str(tmp_path / "run" / "model.safetensors"), best=False)
    finished = next(gen)
    assert isinstance(finished, Finished) and finished.reason == "stopped" and finished.step == 4
    assert ckpt.load_train_state(tmp_path / "run")["step"] == 4


def test_control_rejects_a_bad_learning_rate():
    with pytest.raises(Exception, match="positive"):
        TrainControl().set_lr(-1)


# ---- faults ----------------------------------------------------------------------------------------
# Made for real elsewhere, not by patching the model to raise: out of memory (a child under RLIMIT_AS),
# tests/reliability/test_real_oom.py; a full disk at a checkpoint (a small tmpfs filled after the first one,
# or RLIMIT_FSIZE), test_real_disk.py; a NaN loss (a learning rate of 1e6 typed into the running trainer),
# test_faults_training.py::test_an_absurd_learning_rate_is_caught_within_a_step_and_never_saved.


def test_missing_device_is_a_config_failure(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    events = run_all(Trainer(tiny_config("train.device=cuda"), tmp_path / "run"))
    assert len(events) == 1 and events[0].kind == "config" and "CUDA" in events[0].message


def test_a_bad_corpus_is_a_data_failure(tmp_path):
    events = run_all(Trainer(tiny_config(f"corpus.source={tmp_path / 'nothing.txt'}"), tmp_path / "run"))
    assert len(events) == 1 and isinstance(events[0], Failed) and events[0].kind == "data"


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch):
    def broken_compile(model, *args, **kwargs):
        raise RuntimeError("inductor exploded")

    monkeypatch.setattr(torch, "compile", broken_compile)
    events = run_all(Trainer(tiny_config("train.compile=on", "train.max_steps=5"), tmp_path / "a"))
    notices = [e for e in events if isinstance(e, Notice)]
    assert len(notices) == 1 and "inductor exploded" in notices[0].message
    assert isinstance(events[-1], Finished)


def test_compile_failure_at_the_first_call_falls_back_to_eager(tmp_path, monkeypatch):
    class FailsWhenCalled(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.inner = model

        def forward(self, *args, **kwargs):
            raise RuntimeError("backend compiler failed")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: FailsWhenCalled(model))
    events = run_all(Trainer(tiny_config("train.compile=on", "train.max_steps=12"), tmp_path / "a"))
    assert [e.message for e in events if isinstance(e, Notice)][0].startswith("torch.compile failed")
    assert isinstance(events[-1], Finished) and len(step_losses(events)) == 12


# ---- CUDA (skipped without a GPU) ------------------------------------------------------------------
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_cuda_training_with_mixed_precision_and_compile(tmp_path, precision):
    cfg = tiny_config("train.device=cuda", f"train.precision={precision}", "train.compile=auto")
    trainer = Trainer(cfg, tmp_path / "run")
    events = run_all(trainer)
    assert isinstance(events[-1], Finished), events[-1]
    assert events[0].device.startswith("CUDA: ")
    assert trainer.parts.optimizer.defaults.get("fused") is True
    assert (trainer.parts.scaler is not None) == (trainer.parts.precision.name == "fp16")
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    assert evals[-1].val_loss < evals[0].val_loss


def test_stop_while_preparing_data_finishes_quietly(tmp_path):
    control = TrainControl()
    control.stop()
    events = run_all(Trainer(tiny_config(), tmp_path / "run", control=control))
    assert len(events) == 1 and isinstance(events[0], Finished) and events[0].reason == "stopped"


def test_checkpoint_interval_and_best_weights(tmp_path):
    events = run_all(
        Trainer(
            tiny_config("train.checkpoint_interval=4", "train.eval_interval=10", "train.max_steps=20"),
            tmp_path / "run",
        )
    )
    saved = [(e.step, e.best) for e in events if isinstance(e, Checkpointed)]
    evals = {e.step: e.val_loss for e in events if isinstance(e, EvalMetrics)}
    assert [s for s, _ in saved] == [4, 8, 10, 12, 16, 20]  # 10: an evaluation that improved
    assert dict(saved)[10] is True
    best_step = min(evals, key=evals.get)
    assert ckpt.weights_metadata(tmp_path / "run" / "best.safetensors")["step"] == best_step


def test_losses_equal_a_hand_written_loop(tmp_path):
    """The trainer's per-step losses are those of a plain PyTorch loop with the same seed and batches."""
    from lmstudio.engine.data import Batcher, prepare_data
    from lmstudio.engine.device import seed_everything

    cfg = tiny_config("train.max_steps=12", "train.eval_interval=5", "train.grad_clip=0.5")
    got = step_losses(run_all(Trainer(cfg, tmp_path / "run", cache_dir=tmp_path / "cache")))
    t = cfg.train
    seed_everything(t.seed)
    tokenizer, data = prepare_data(cfg, cache_dir=tmp_path / "cache")
    cfg.model.vocab_size = tokenizer.vocab_size
    model = models_module.build_model(cfg.model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.lr,
        betas=(t.beta1, t.beta2),
        fused=True,
    )  # the trainer's choice on CPU, as on CUDA
    batches = Batcher(data, t.batch_size, cfg.model.block_size, t.seed)
    expected = {}
    for step in range(t.max_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, t)
        x, y = batches.get("train")
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        expected[step + 1] = loss.item()
    assert got == expected


def test_a_given_tokenizer_is_used_as_is(tmp_path):
    from lmstudio.engine.tokenizer import Tokenizer, train_tokenizer

    cfg = tiny_config("train.max_steps=2")
    tokenizer = train_tokenizer(
        cfg.tokenizer, "春眠不覺曉處處聞啼鳥" * 3
    )  # a deliberately different vocabulary
    events = run_all(Trainer(cfg, tmp_path / "run", tokenizer=tokenizer))
    assert isinstance(events[-1], Finished)
    saved = Tokenizer.load(tmp_path / "run" / "tokenizer.json")
    assert (
        saved.vocab() == tokenizer.vocab() and events[0].config["model"]["vocab_size"] == tokenizer.vocab_size
    )
