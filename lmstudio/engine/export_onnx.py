"""Export a run's model as ONNX (token ids -> logits), checked with onnxruntime before it is kept.

The forward graph takes ``idx`` int64 (batch, seq) and returns ``logits`` float32 (batch, seq, vocab);
both axes are dynamic (the Transformer's sequence up to its context, a recurrent model's without limit).

Which exporter: torch 2.13's default, the dynamo exporter (``torch.export`` + onnxscript), handles the
Transformer with a dynamic sequence length. For nn.RNN/LSTM/GRU it specializes the sequence length to
the example's (onnxruntime then refuses any other length), so the recurrent models, and the step graphs
(whose cache may start empty, a zero-length axis torch.export will not keep dynamic), use torch's
TorchScript exporter, which records the ONNX RNN/LSTM/GRU operators with dynamic axes.

``step=True`` also writes ``<name>.step.onnx`` for incremental decoding:

* Transformer: ``idx`` (batch, new), ``past_keys``/``past_values`` (layers, batch, heads, past, head size)
  -> ``logits`` (batch, new, vocab), ``present_keys``/``present_values`` (..., past + new, ...). Start
  with ``past`` = 0; past + new may not pass the context.
* Recurrent: ``idx``, ``h`` (layers, batch, hidden) [, ``c`` for the LSTM] -> ``logits``, ``h_out``
  [, ``c_out``]. Start from zeros.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmstudio.engine.export_common import (
    TOLERANCE,
    ExportError,
    ExportResult,
    check_destination,
    describe_write_error,
    quiet_libraries,
    remove_quietly,
    require_extra,
    stage_reporter,
    temp_sibling,
)
from lmstudio.engine.export_hf import check_sequences

# one ONNX file holds at most 2 GB (protobuf's limit); past this the weights would need a side file
INLINE_LIMIT = (1 << 31) - (64 << 20)


def step_path(path: Path) -> Path:
    return path.with_name(path.stem + ".step.onnx")


class _Logits(nn.Module):
    """The model's forward with only the logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)[0]


class _GPTStep(nn.Module):
    """One decoding step of our GPT over an explicit cache that grows by concatenation (ONNX-friendly;
    GPT.step writes into fixed buffers in place instead)."""

    def __init__(self, gpt: Any):
        super().__init__()
        self.gpt = gpt

    def forward(self, idx, past_keys, past_values):  # idx (B, T), past (L, B, nh, P, hs)
        g = self.gpt
        P, T = past_keys.size(3), idx.size(1)
        q_pos = torch.arange(T, device=idx.device) + P  # (T,) absolute positions of the new tokens
        k_pos = torch.arange(P + T, device=idx.device)  # (P+T,)
        table = g.wpe.weight if g.wpe is not None else g.pe
        x = g.wte(idx) + F.embedding(q_pos, table)  # (B, T, C)
        visible = k_pos.unsqueeze(0) <= q_pos.unsqueeze(1)  # (T, P+T)
        keys, values = [], []
        for i, block in enumerate(g.blocks):
            attn = block.attn
            q, k, v = attn._heads(block.ln_1(x))  # (B, nh, T, hs)
            k = torch.cat([past_keys[i], k], dim=2)  # (B, nh, P+T, hs)
            v = torch.cat([past_values[i], v], dim=2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(attn.head_size))  # (B, nh, T, P+T)
            att = att.masked_fill(~visible, float("-inf")).softmax(dim=-1)
            x = x + attn._merge(att @ v)  # att @ v: (B, nh, T, hs)
            x = x + block.mlp(block.ln_2(x))
            keys.append(k)
            values.append(v)
        return g.lm_head(g.ln_f(x)), torch.stack(keys), torch.stack(values)  # (L, B, nh, P+T, hs)


class _RecurrentStep(nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, idx, h, c=None):  # h, c: (L, B, H)
        m = self.model
        out, carry = m.rnn(m.wte(idx), (h, c) if c is not None else h)  # out: (B, T, H)
        logits = m.head(out)
        return (logits, *carry) if c is not None else (logits, carry)


class _ConvStep(nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, idx, *buffers):  # buffers: per layer (B, C, (k-1)*d)
        m = self.model
        x = m.wte(idx)  # (B, T, C)
        new = []
        for block, buffer in zip(m.blocks, buffers, strict=True):
            x, buffer = block.step(x, buffer)
            new.append(buffer)
        return (m.lm_head(m.ln_f(x)), *new)


# ---- the export --------------------------------------------------------------------------------------
def export_onnx(
    run_dir: str | Path,
    out: str | Path,
    which: str = "latest",
    overwrite: bool = False,
    step: bool = False,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> ExportResult:
    """Write ``out`` (FILE.onnx; with ``step`` also FILE.step.onnx) and check it with onnxruntime."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"the ONNX file name must end in .onnx, got {out.name!r}")
    require_extra("onnx")
    from lmstudio.engine.session import Session

    report = stage_reporter(progress, cancel)
    targets = [out, step_path(out)] if step else [out]
    for target in targets:
        check_destination(target, overwrite, folder=False)
    session = Session.load(run_dir, device="cpu", which=which)
    model: Any = session.model.float().eval()  # a LanguageModel with its ModelConfig as .cfg
    if _too_big(model):
        raise ExportError(
            "the model's weights pass ONNX's 2 GB single-file limit; lmstudio writes single-file ONNX only"
        )
    temps = [temp_sibling(t) for t in targets]
    try:
        with quiet_libraries():
            exporter = _export_forward(model, temps[0])
            report(0.4)
            diff, n = _check_forward(model, temps[0])
            if step:
                _export_step(model, temps[1])
                report(0.8)
                diff = max(diff, _check_step(model, temps[1]))
                n += 1
        for tmp, target in zip(temps, targets, strict=True):
            tmp.replace(target)
    except OSError as e:
        for tmp in temps:
            remove_quietly(tmp)
        raise ExportError(f"cannot write {out}: {describe_write_error(e)}") from None
    except BaseException:
        for tmp in temps:
            remove_quietly(tmp)
        raise
    report(1.0)
    notes = [f"forward graph written by the {exporter}"]
    if step:
        notes.append(f"step graph: {step_path(out).name}")
    return ExportResult(out, "onnx", model.cfg.arch, diff, n, "onnxruntime", notes)


def _too_big(model: Any) -> bool:
    return sum(p.numel() * p.element_size() for p in model.parameters()) > INLINE_LIMIT


def _example(model: Any) -> torch.Tensor:
    # a length that is neither 0 nor 1 (torch.export specializes those) and fits the context
    return torch.zeros(2, min(8, model.block_size), dtype=torch.long)


def _export_forward(model: Any, path: Path) -> str:
    """Write the forward graph; returns which exporter wrote it."""
    wrapper = _Logits(model).eval()
    if model.cfg.arch in ("transformer", "conv"):
        # the Transformer's learned positions end at the context; the convolutions run on without limit
        limit = {"max": model.block_size} if model.cfg.arch == "transformer" else {}
        seq = torch.export.Dim("seq", min=1, **limit)
        torch.onnx.export(
            wrapper,
            (_example(model),),
            str(path),
            input_names=["idx"],
            output_names=["logits"],
            dynamic_shapes={"idx": {0: torch.export.Dim("batch", min=1), 1: seq}},
            dynamo=True,
            external_data=False,  # one self-contained file (size checked before)
            verbose=False,
        )
        return "torch.onnx dynamo exporter"
    torch.onnx.export(
        wrapper,
        (_example(model),),
        str(path),
        input_names=["idx"],
        output_names=["logits"],
        dynamic_axes={"idx": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}},
        dynamo=False,
        verbose=False,
    )
    return "torch.onnx TorchScript exporter"


def _export_step(model: Any, path: Path) -> None:
    cfg = model.cfg
    idx = torch.zeros(1, 2, dtype=torch.long)
    if cfg.arch == "transformer":
        shape = (cfg.n_layer, 1, cfg.n_head, 3, cfg.n_embd // cfg.n_head)
        args: tuple[torch.Tensor, ...] = (idx, torch.zeros(shape), torch.zeros(shape))
        names_in = ["idx", "past_keys", "past_values"]
        names_out = ["logits", "present_keys", "present_values"]
        cache = {1: "batch", 3: "past"}
        axes = {"idx": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
        axes |= {n: cache for n in names_in[1:]}
        axes |= {n: {1: "batch", 3: "total"} for n in names_out[1:]}
        wrapper: nn.Module = _GPTStep(model)
    elif cfg.arch == "conv":
        buffers = [torch.zeros(1, cfg.n_embd, b.history) for b in model.blocks]
        args = (idx, *buffers)
        names_in = ["idx", *(f"buffer_{i}" for i in range(len(buffers)))]
        names_out = ["logits", *(f"buffer_{i}_out" for i in range(len(buffers)))]
        axes = {"idx": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
        axes |= {n: {0: "batch"} for n in names_in[1:] + names_out[1:]}
        wrapper = _ConvStep(model)
    else:
        h = torch.zeros(cfg.n_layer, 1, cfg.hidden_size)
        lstm = cfg.arch == "lstm"
        args = (idx, h, h.clone()) if lstm else (idx, h)
        names_in = ["idx", "h", "c"] if lstm else ["idx", "h"]
        names_out = ["logits", "h_out", "c_out"] if lstm else ["logits", "h_out"]
        axes = {"idx": {0: "batch", 1: "new"}, "logits": {0: "batch", 1: "new"}}
        axes |= {n: {1: "batch"} for n in names_in[1:] + names_out[1:]}
        wrapper = _RecurrentStep(model)
    torch.onnx.export(
        wrapper.eval(),
        args,
        str(path),
        input_names=names_in,
        output_names=names_out,
        dynamic_axes=axes,
        dynamo=False,
        verbose=False,
    )


# ---- the checks --------------------------------------------------------------------------------------
def _ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _within(diff: float, what: str) -> float:
    if not diff <= TOLERANCE:
        raise ExportError(
            f"onnxruntime's {what} differ from lmstudio's by {diff:.2e} (more than {TOLERANCE:g}); nothing "
            "was written. Please report this with the run's config.json."
        )
    return diff


def _check_forward(model: Any, path: Path) -> tuple[float, int]:
    ort = _ort_session(path)
    seqs = check_sequences(model.cfg.vocab_size, model.block_size)
    seqs.append(torch.cat([seqs[-1], seqs[-1].flip(1)]))  # a batch of two
    diff = 0.0
    with torch.no_grad():
        for idx in seqs:
            theirs = ort.run(["logits"], {"idx": idx.numpy()})[0]
            diff = max(diff, float(np.abs(theirs - model(idx)[0].numpy()).max()))
    return _within(diff, "logits"), len(seqs)


def _check_step(model: Any, path: Path) -> float:
    """Feed half a context at once, then one token at a time to the end; compare with one forward pass."""
    ort = _ort_session(path)
    cfg = model.cfg
    idx = check_sequences(cfg.vocab_size, model.block_size)[-1]  # (1, block_size)
    with torch.no_grad():
        want = model(idx)[0].numpy()
    first = max(1, model.block_size // 2)
    pieces = [idx[:, :first]] + [idx[:, t : t + 1] for t in range(first, idx.size(1))]
    if cfg.arch == "transformer":
        empty = np.zeros((cfg.n_layer, 1, cfg.n_head, 0, cfg.n_embd // cfg.n_head), dtype=np.float32)
        state = {"past_keys": empty, "past_values": empty}
        rename = {"present_keys": "past_keys", "present_values": "past_values"}
    elif cfg.arch == "conv":
        state = {
            f"buffer_{i}": np.zeros((1, cfg.n_embd, b.history), np.float32)
            for i, b in enumerate(model.blocks)
        }
        rename = {f"{name}_out": name for name in state}
    else:
        zeros = np.zeros((cfg.n_layer, 1, cfg.hidden_size), dtype=np.float32)
        state = {"h": zeros, "c": zeros} if cfg.arch == "lstm" else {"h": zeros}
        rename = {"h_out": "h", "c_out": "c"}
    got = []
    names = [o.name for o in ort.get_outputs()]
    for piece in pieces:
        outputs = dict(zip(names, ort.run(names, {"idx": piece.numpy(), **state}), strict=True))
        got.append(outputs.pop("logits"))
        state = {rename[k]: v for k, v in outputs.items()}
    return _within(float(np.abs(np.concatenate(got, axis=1) - want).max()), "step logits")
