"""Export a run as a folder the Hugging Face libraries load with no lmstudio code.

The Transformer becomes a ``GPT2LMHeadModel``. Our GPT is GPT-2's architecture (pre-LayerNorm blocks,
fused QKV projection, 4x MLP, eps 1e-5, attention scaled by 1/sqrt(head size), no bias on the output
matrix) with four settings GPT-2's config cannot name; each is mapped so the logits stay the same:

* GELU: ours is the exact (erf) GELU, GPT-2's default ``gelu_new`` is the tanh approximation, so the
  config says ``activation_function="gelu"``.
* No biases (``model.bias=false``): GPT-2 always has them; they are written as zeros.
* Sinusoidal positions: GPT-2 only has a learned table; our fixed table (scaled, see transformer.py)
  is written as ``wpe``. Inference is identical; fine-tuning in Transformers would train it.
* Untied output matrix: ``tie_word_embeddings=false`` and both matrices are written.

torch's ``nn.Linear`` stores (out, in), GPT-2's ``Conv1D`` (in, out): every block matrix is transposed.
The fused QKV keeps its layout (q, k, v side by side, each split into heads the same way).

Recurrent models have no class in Transformers: their folder holds our weights under torch's own
``nn.RNN/LSTM/GRU`` names, a small config.json (``model_type: lmstudio-recurrent``, documented in
docs/export.md) and a few lines of plain PyTorch (in the model card) that load them.

Either way the tokenizer is saved as a ``PreTrainedTokenizerFast`` (``AutoTokenizer`` loads it and gives
our ids), and the export checks itself before it is moved into place: it loads the folder back as the
model card's code does and compares the logits with lmstudio's (tests run the card's code itself).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from lmstudio.engine import checkpoint as ckpt
from lmstudio.engine.export_common import (
    TOLERANCE,
    ExportError,
    ExportResult,
    check_destination,
    describe_write_error,
    model_card,
    move_into_place,
    quiet_libraries,
    remove_quietly,
    require_extra,
    stage_reporter,
    temp_sibling,
)

RECURRENT_MODEL_TYPE = "lmstudio-recurrent"
# the architectures this format can carry: GPT-2 for the Transformer, plain torch.nn for the recurrent ones
HF_ARCHS = ("transformer", "rnn", "lstm", "gru")

GPT2_LOAD_CODE = """
from transformers import AutoTokenizer, GPT2LMHeadModel

folder = "{folder}"
tokenizer = AutoTokenizer.from_pretrained(folder)
model = GPT2LMHeadModel.from_pretrained(folder).eval()
"""

GPT2_USE_CODE = """
ids = tokenizer("To be", return_tensors="pt").input_ids
out = model.generate(ids, max_new_tokens=40, do_sample=True, top_k=50)
print(tokenizer.decode(out[0]))
"""

RECURRENT_LOAD_CODE = """
import json
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

folder = "{folder}"
cfg = json.load(open(f"{{folder}}/config.json"))
RNN = {{"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}}[cfg["arch"]]

class RecurrentLM(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = torch.nn.Embedding(c["vocab_size"], c["n_embd"])
        self.rnn = RNN(c["n_embd"], c["hidden_size"], c["n_layer"], bias=c["bias"], batch_first=True)
        self.head = torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=c["bias"])

    def forward(self, idx, state=None):  # idx (B, T) -> logits (B, T, V), state to carry on
        out, state = self.rnn(self.wte(idx), state)
        return self.head(out), state

tokenizer = AutoTokenizer.from_pretrained(folder)
model = RecurrentLM(cfg)
model.load_state_dict(load_file(f"{{folder}}/model.safetensors"))
model.eval()
"""

RECURRENT_USE_CODE = """
ids = torch.tensor([tokenizer("To be")["input_ids"]])
logits, state = model(ids)
print(tokenizer.decode(logits[0].argmax(-1)))  # the likeliest next token after each position
"""


# ---- the GPT-2 mapping -------------------------------------------------------------------------------
def gpt2_config(mcfg) -> dict:
    """GPT2Config keyword arguments for our ModelConfig (see the module docstring)."""
    return dict(
        vocab_size=mcfg.vocab_size,
        n_positions=mcfg.block_size,
        n_embd=mcfg.n_embd,
        n_layer=mcfg.n_layer,
        n_head=mcfg.n_head,
        n_inner=4 * mcfg.n_embd,
        activation_function="gelu",  # exact erf GELU, as nn.GELU()
        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default
        resid_pdrop=mcfg.dropout,
        embd_pdrop=mcfg.dropout,
        attn_pdrop=mcfg.dropout,
        scale_attn_weights=True,
        tie_word_embeddings=mcfg.tie_weights,
        bos_token_id=None,  # GPT-2's 50256 means nothing in our vocabulary
        eos_token_id=None,
        pad_token_id=None,
    )


def gpt2_state_dict(model) -> dict[str, torch.Tensor]:
    """Our GPT's weights under GPT-2's names and layout (Conv1D matrices are (in, out))."""
    cfg = model.cfg
    C = cfg.n_embd
    src = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}

    def bias(name: str, size: int) -> torch.Tensor:
        return src[name] if name in src else torch.zeros(size)

    out = {"transformer.wte.weight": src["wte.weight"]}
    out["transformer.wpe.weight"] = src["wpe.weight"] if "wpe.weight" in src else model.pe.detach().float()
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[f"{theirs}{ln}.weight"] = src[f"{ours}{ln}.weight"]
            out[f"{theirs}{ln}.bias"] = bias(f"{ours}{ln}.bias", C)
        for name, width in (
            ("attn.c_attn", 3 * C),
            ("attn.c_proj", C),
            ("mlp.c_fc", 4 * C),
            ("mlp.c_proj", C),
        ):
            out[f"{theirs}{name}.weight"] = src[f"{ours}{name}.weight"].t().contiguous()  # (in, out)
            out[f"{theirs}{name}.bias"] = bias(f"{ours}{name}.bias", width)
    out["transformer.ln_f.weight"] = src["ln_f.weight"]
    out["transformer.ln_f.bias"] = bias("ln_f.bias", C)
    out["lm_head.weight"] = src["lm_head.weight"]
    return out


def conversion_notes(mcfg) -> list[str]:
    notes = [
        "GELU: lmstudio uses the exact (erf) GELU, so config.json sets activation_function to 'gelu' "
        "instead of GPT-2's default tanh approximation 'gelu_new'.",
        f"Context: n_positions is the trained context, {mcfg.block_size} tokens; longer inputs fail.",
    ]
    if mcfg.pos_encoding == "sinusoidal":
        notes.append(
            "Positions: the model used fixed sinusoidal positions, which GPT-2 cannot express; the fixed "
            "table is stored as GPT-2's learned position table (transformer.wpe). Inference is identical; "
            "to fine-tune faithfully, freeze transformer.wpe."
        )
    if not mcfg.bias:
        notes.append(
            "Biases: the model had none; GPT-2 always has them, so they are stored as zeros. Inference is "
            "identical; fine-tuning in Transformers would train them."
        )
    if not mcfg.tie_weights:
        notes.append("Output matrix: not tied to the token embedding (tie_word_embeddings is false).")
    return notes


# ---- the export --------------------------------------------------------------------------------------
def export_hf(
    run_dir: str | Path,
    out: str | Path,
    which: str = "latest",
    overwrite: bool = False,
    progress: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
) -> ExportResult:
    """Write ``out`` (a new folder) from the run's ``which`` checkpoint; see the module docstring."""
    require_extra("hf")
    from lmstudio.engine.session import Session

    report = stage_reporter(progress, cancel)
    out = Path(out)
    check_destination(out, overwrite, folder=True)
    session = Session.load(run_dir, device="cpu", which=which)
    arch = session.config.model.arch
    if arch not in HF_ARCHS:
        raise ExportError(
            f"a {arch} model has no class in Hugging Face Transformers and no layout another tool would "
            "know; export it with --format onnx (ONNX Runtime runs every architecture)"
        )
    report(0.2)
    tmp = temp_sibling(out)
    remove_quietly(tmp)
    try:
        tmp.mkdir()
        with quiet_libraries():
            notes, diff, n = _write_folder(session, tmp, out.name, which, report)
        move_into_place(tmp, out)
    except (OSError, SafetensorError) as e:  # safetensors reports a full disk as its own error
        remove_quietly(tmp)
        raise ExportError(f"cannot write {out}: {describe_write_error(e)}") from None
    except BaseException:
        remove_quietly(tmp)
        raise
    report(1.0)
    checked_by = "transformers GPT2LMHeadModel" if arch == "transformer" else "plain PyTorch"
    return ExportResult(out, "hf", arch, diff, n, checked_by, notes)


def _write_folder(session, tmp: Path, name: str, which: str, report) -> tuple[list[str], float, int]:
    mcfg = session.config.model
    if mcfg.arch == "transformer":
        notes = _write_gpt2(session.model, tmp)
        fmt = ["Format: a Hugging Face Transformers `GPT2LMHeadModel` with its tokenizer."]
        load_code, use_code = GPT2_LOAD_CODE, GPT2_USE_CODE
    else:
        notes = _write_recurrent(session.model, tmp)
        fmt = [
            f"Format: safetensors weights of a PyTorch `nn.{mcfg.arch.upper()}` language model, with "
            "a Hugging Face tokenizer. Transformers has no class for recurrent language models, so "
            "the model loads with the plain PyTorch below (the tokenizer with `AutoTokenizer`)."
        ]
        load_code, use_code = RECURRENT_LOAD_CODE, RECURRENT_USE_CODE
    report(0.5)
    _write_tokenizer(session.tokenizer, mcfg.block_size if mcfg.arch == "transformer" else None, tmp)
    if getattr(session.tokenizer, "segmented", False):
        notes = [
            *notes,
            "Chinese text: this word tokenizer cuts Chinese into words with jieba (dictionary mode) "
            "before the vocabulary lookup, which the Hugging Face tokenizer cannot do; it keeps a run of "
            "Chinese characters whole. Segment first and pass the words with `is_split_into_words=True` "
            "(lmstudio's `Tokenizer.words(text)` gives them); text without Chinese needs nothing else.",
        ]
    card = model_card(
        config=session.config,
        run_dir=session.run_dir,
        which=which,
        meta=ckpt.weights_metadata(ckpt.weights_path(session.run_dir, which)),
        n_params=session.model.num_params(),
        fmt_lines=fmt,
        load_code=load_code.format(folder=name) + use_code,
        notes=notes,
    )
    (tmp / "README.md").write_text(card, encoding="utf-8")
    report(0.7)
    diff, n = _check(session, tmp)
    report(0.95)
    return notes, diff, n


def _write_gpt2(model, folder: Path) -> list[str]:
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    mcfg = model.cfg
    config = GPT2Config(**gpt2_config(mcfg))
    config.architectures = ["GPT2LMHeadModel"]
    hf = GPT2LMHeadModel(config)
    weights = gpt2_state_dict(model)
    if mcfg.tie_weights:
        weights.pop("lm_head.weight")  # one tensor: load_state_dict fills the tie
    missing, unexpected = hf.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not (mcfg.tie_weights and k == "lm_head.weight")]
    if missing or unexpected:  # a transformers version with other names: refuse rather than guess
        raise ExportError(
            f"this transformers version names GPT-2's weights differently (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); install the pinned version from constraints.txt"
        )
    hf.generation_config = GenerationConfig(do_sample=False, max_length=mcfg.block_size)
    hf.save_pretrained(folder, safe_serialization=True)
    return conversion_notes(mcfg)


def _write_recurrent(model, folder: Path) -> list[str]:
    mcfg = model.cfg
    # every tensor stored on its own (a tied head repeats the embedding) so plain load_state_dict works
    weights = {k: v.detach().float().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "model_type": RECURRENT_MODEL_TYPE,
        "arch": mcfg.arch,
        "vocab_size": mcfg.vocab_size,
        "n_embd": mcfg.n_embd,
        "hidden_size": mcfg.hidden_size,
        "n_layer": mcfg.n_layer,
        "bias": mcfg.bias,
        "tied": bool(model.tied),
        "block_size": mcfg.block_size,
        "dropout": mcfg.dropout,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    notes = [
        f"Transformers has no class for recurrent language models; config.json (model_type "
        f"'{RECURRENT_MODEL_TYPE}') describes torch.nn.{mcfg.arch.upper()} and the card shows the loader.",
        f"The model was trained on windows of {mcfg.block_size} tokens; its state carries on past them.",
    ]
    if model.tied:
        notes.append("The output matrix was tied to the token embedding; both are stored (equal tensors).")
    return notes


def _write_tokenizer(tokenizer, max_length: int | None, folder: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import PreTrainedTokenizerFast

    from lmstudio.engine.token_text import UNK

    hf = PreTrainedTokenizerFast(
        tokenizer_object=HFTokenizer.from_str(tokenizer.to_str()),
        unk_token=None if tokenizer.kind == "bpe" else UNK,  # byte-level BPE has no unknown token
        **({"model_max_length": max_length} if max_length else {}),  # recurrent models have no limit
        clean_up_tokenization_spaces=False,
    )
    hf.save_pretrained(str(folder))


# ---- the self-check ----------------------------------------------------------------------------------
def check_sequences(vocab_size: int, block_size: int) -> list[torch.Tensor]:
    """Three fixed pseudo-random id sequences: one token, half a context, a whole context."""
    gen = torch.Generator().manual_seed(0)
    lengths = sorted({1, max(1, block_size // 2), block_size})
    return [torch.randint(0, vocab_size, (1, n), generator=gen) for n in lengths]


def _load_back(folder: Path, arch: str):
    """(model, tokenizer) from the folder alone, as the model card's code loads them."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if arch == "transformer":
        return GPT2LMHeadModel.from_pretrained(folder, local_files_only=True).eval(), tokenizer
    c = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    rnn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[c["arch"]]
    model = torch.nn.ModuleDict(
        {
            "wte": torch.nn.Embedding(c["vocab_size"], c["n_embd"]),
            "rnn": rnn(c["n_embd"], c["hidden_size"], c["n_layer"], bias=c["bias"], batch_first=True),
            "head": torch.nn.Linear(c["hidden_size"], c["vocab_size"], bias=c["bias"]),
        }
    )
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), tokenizer


def _logits(model, idx: torch.Tensor, arch: str) -> torch.Tensor:
    if arch == "transformer":
        return model(idx).logits
    out, _ = model["rnn"](model["wte"](idx))
    return model["head"](out)


def _check(session, folder: Path) -> tuple[float, int]:
    """Load ``folder`` back (as the model card does) and compare its logits and token ids with ours."""
    from lmstudio.engine.token_text import UNK

    model, hf_tok = _load_back(folder, session.config.model.arch)
    mcfg = session.config.model
    diff = 0.0
    seqs = check_sequences(mcfg.vocab_size, mcfg.block_size)
    with torch.no_grad():
        for idx in seqs:
            ours = session.model(idx)[0]
            theirs = _logits(model, idx, mcfg.arch)
            diff = max(diff, float((ours - theirs).abs().max()))
    if not diff <= TOLERANCE:
        raise ExportError(
            f"the exported model's logits differ from lmstudio's by {diff:.2e} (more than {TOLERANCE:g}); "
            "nothing was written. Please report this with the run's config.json."
        )
    ours = session.tokenizer
    for sample in ("Hello, world!\n  To be, or not to be 123", f"床前明月光，疑是地上霜。 {UNK} x"):
        if getattr(ours, "segmented", False):  # Chinese is cut by jieba first, as the model card says
            theirs_ids = hf_tok(ours.words(sample), is_split_into_words=True, add_special_tokens=False)
        else:
            theirs_ids = hf_tok(sample, add_special_tokens=False)
        if theirs_ids["input_ids"] != ours.encode(sample):
            raise ExportError("the exported tokenizer gives other ids than lmstudio's; nothing was written")
    return diff, len(seqs)
