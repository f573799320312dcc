"""The CLI's commands; each takes the parsed arguments and returns the exit code (see cli.py).

Kept apart from the parser so ``lmstudio --help`` stays instant: torch is imported only by the
commands that need it.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path

from lmstudio import run_status
from lmstudio.cli import (
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    CliError,
    InterruptToStop,
    existing_run_dir,
    finite_or_none,
    format_duration,
    print_error,
    print_json,
)


# ---- train -------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    if args.nproc is not None:
        from lmstudio.engine import launch

        launch.check_nproc(args.nproc, args.device)
        return launch.launch(args.nproc, launch.strip_nproc(args.argv))
    from lmstudio.engine import distributed

    ranks = distributed.init_from_env()  # torchrun started this process: join the others
    try:
        return _train(args, ranks)
    except distributed.PeerFailed:  # another rank failed and printed why
        return EXIT_USER_ERROR
    finally:
        ranks.close()


def _config_and_folder(args, ranks):
    from lmstudio.config import ConfigError, RunConfig, load_preset
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine.distributed import check_batch_split

    overrides = list(args.set)
    if args.resume:
        for flag in ("out", "preset"):
            if getattr(args, flag):
                raise CliError(
                    f"--{flag} cannot be combined with --resume: a resumed run keeps its folder and settings "
                    "(change training settings with --set)"
                )
        run_dir = existing_run_dir(args.resume)
        cfg = RunConfig.load(run_dir / ckpt.CONFIG_FILE)
    else:
        args.preset = args.preset or "tiny_tang"
        cfg = load_preset(args.preset)
    for flag, key in (
        ("corpus", "corpus.source"),
        ("tokenizer", "tokenizer.kind"),
        ("arch", "model.arch"),
        ("device", "train.device"),
    ):
        if getattr(args, flag):
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        cfg = cfg.override(overrides).validate()
        check_batch_split(cfg.train.batch_size, ranks.world_size)
    except ConfigError as e:
        if not args.resume:
            raise
        # a bad value the user did not just type comes from the run's config.json: say so
        typed = {o.partition("=")[0].strip() for o in overrides}
        raise ConfigError(
            {(k if k in typed else f"{run_dir / ckpt.CONFIG_FILE}: {k}"): v for k, v in e.errors.items()}
        ) from None
    if not args.resume:
        cfg.corpus.source = _absolute_corpus(cfg.corpus.source)
        if not ranks.is_main:
            return cfg, None  # rank 0 makes the folder and tells the others
        if args.out:
            run_dir = Path(args.out)
            if (run_dir / ckpt.CONFIG_FILE).exists():
                raise CliError(
                    f"{run_dir} already holds a run; continue it with --resume {run_dir} "
                    "or choose another --out folder"
                )
            # the trainer creates it, only where it is missing or empty (and removes it if the start fails)
        else:
            run_dir = ckpt.new_run_dir(ckpt.default_runs_dir(), cfg.name or Path(args.preset).stem)
        cfg = dataclasses.replace(cfg, name=run_dir.name)  # the folder's name is the run's (unique) name
    return cfg, run_dir


def _train(args, ranks) -> int:
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine import distributed
    from lmstudio.engine.trainer import TrainControl, Trainer

    cfg, run_dir = ranks.together(lambda: _config_and_folder(args, ranks))
    tokenizer = None
    if ranks.active:
        run_dir = Path(ranks.broadcast(str(run_dir)))
        if not args.resume:  # one tokenizer for all ranks, trained once
            tokenizer = distributed.shared_tokenizer(ranks, cfg, ckpt.default_cache_dir())
    control = TrainControl()
    if ranks.active and ranks.is_main:
        ranks.control_file = distributed.ControlFile(run_dir)  # the app's pause / resume / stop
    trainer = Trainer(
        cfg,
        run_dir,
        control=control,
        resume=bool(args.resume),
        cache_dir=ckpt.default_cache_dir(),
        tokenizer=tokenizer,
        dist=ranks,
    )
    if not ranks.is_main:
        report = _OtherRankReport(ranks.rank)
    else:
        report = _JsonReport() if args.json else _TextReport(sys.stdout.isatty())
    code = 0
    # several ranks: torchrun passes Ctrl-C on as SIGINT and a shutdown as SIGTERM; both stop gracefully
    with InterruptToStop(control.stop) as interrupt, _TermToStop(control.stop, ranks.active):
        try:
            # status.json (how the run ended) is written by the one rank that writes the run folder
            events = run_status.record(trainer.run(), run_dir) if ranks.is_main else trainer.run()
            for event in events:
                report(event)
                kind = type(event).__name__
                if kind == "Failed":
                    code = EXIT_USER_ERROR
                elif kind == "Finished":
                    code = interrupt.exit_code if interrupt.interrupted else 0
        except KeyboardInterrupt:  # a second Ctrl-C: leave at once, the last checkpoint stays
            print_error("aborted; the run can be resumed from its last checkpoint")
            return EXIT_INTERRUPTED
    return code


class _TermToStop:
    """While active (and ``enabled``), SIGTERM asks for a graceful stop instead of ending the process."""

    def __init__(self, on_term, enabled: bool):
        self.on_term, self.enabled = on_term, enabled
        self._previous = None

    def __enter__(self):
        import signal

        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: self.on_term())
        return self

    def __exit__(self, *exc):
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False


class _OtherRankReport:
    """Ranks other than 0 print only a failure of their own (rank 0 reports everything else, and a NaN
    loss, being the mean over ranks, fails every rank at once)."""

    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, event) -> None:
        if type(event).__name__ == "Failed" and event.kind not in ("peer", "nan"):
            print_error(f"rank {self.rank}: {event.message}")


def _absolute_corpus(source: str) -> str:
    """A relative corpus path as an absolute one, so the run resumes (and evaluates) from any folder."""
    from lmstudio.engine.corpus import BUILTINS

    path = Path(source).expanduser()
    if source in BUILTINS or path.is_absolute() or not path.exists():
        return source
    return str(path.resolve())


class _JsonReport:
    def __call__(self, event) -> None:
        data = event.to_dict()
        print_json({k: finite_or_none(v) if isinstance(v, float) else v for k, v in data.items()})


class _TextReport:
    """Human-readable progress: one line rewritten in place on a terminal, plain lines otherwise."""

    def __init__(self, tty: bool):
        self.tty = tty
        self.open_line = False  # a progress line is on screen without its newline yet

    def _line(self, text: str, err: bool = False) -> None:
        if self.open_line:
            print(file=sys.stdout, flush=True)
            self.open_line = False
        print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def __call__(self, event) -> None:
        kind = type(event).__name__
        if kind == "Started":
            m = event.config.get("model", {})
            budget = event.config.get("train", {}).get("max_time") or 0
            verb = "Resuming" if event.start_step else "Training"
            self._line(
                f"{verb} {event.config.get('name') or 'run'}: {m.get('arch')} with "
                f"{event.n_params / 1e6:.2f}M parameters on {event.device}, {event.max_steps} steps"
                f"{f' or {budget:g} s, whichever comes first' if budget else ''}"
                f"{f' from step {event.start_step}' if event.start_step else ''}"
            )
            self._line(f"run folder: {event.run_dir}")
            if event.world_size > 1:
                t = event.config.get("train", {})
                b, n, acc = t.get("batch_size", 0), event.world_size, t.get("grad_accum", 1)
                self._line(
                    f"global batch {b * acc} sequences per step = {b // n} per process × {n} processes"
                    f" × {acc} accumulation"
                )
        elif kind == "StepMetrics":
            text = (
                f"step {event.step}/{event.max_steps}  loss {event.loss:.4f}  lr {event.lr:.2e}  "
                f"grad {event.grad_norm:.2f}  {event.tokens_per_s / 1000:.1f}k tok/s  "
                f"ETA {format_duration(event.eta)}"
            )
            if self.tty:
                print("\r" + text.ljust(100), end="", flush=True)
                self.open_line = True
            else:
                print(text, flush=True)
        elif kind == "EvalMetrics":
            self._line(
                f"eval at step {event.step}: train loss {event.train_loss:.4f}, val loss "
                f"{event.val_loss:.4f}, perplexity {event.val_ppl:.2f}, accuracy {event.val_acc:.1%}, "
                f"{event.val_bpc:.3f} bits/char"
            )
        elif kind == "FullEvalMetrics":
            estimate = f" (running estimate {event.estimate:.4f})" if event.estimate is not None else ""
            self._line(
                f"whole validation split at step {event.step}: val loss {event.val_loss:.4f}{estimate}, "
                f"perplexity {event.val_ppl:.2f}, {event.val_bpc:.3f} bits/char, "
                f"{event.tokens:,} tokens in {event.windows:,} windows"
            )
        elif kind == "Sample":
            self._line(f"sample at step {event.step}:\n  " + event.text.replace("\n", "\n  "))
        elif kind == "Checkpointed":
            if not self.tty:
                self._line(f"checkpoint at step {event.step}{' (best so far)' if event.best else ''}")
        elif kind == "Notice":
            self._line(f"lmstudio: note: {event.message}", err=True)
        elif kind == "Finished":
            self._line(
                f"{'finished' if event.reason == 'completed' else 'stopped'} at step {event.step} "
                f"after {format_duration(event.elapsed)}; run folder: {event.run_dir}"
            )
        elif kind == "Failed" and event.kind != "peer":  # "peer": the failing rank says why
            self._line(f"lmstudio: error: {event.message}", err=True)


# ---- eval --------------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from lmstudio import measures
    from lmstudio.engine import device as dev
    from lmstudio.engine.checkpoint import default_cache_dir
    from lmstudio.engine.data import prepare_data
    from lmstudio.engine.session import Session
    from lmstudio.engine.split_stats import unk_warning
    from lmstudio.engine.train_eval import estimate_losses

    session = Session.load(existing_run_dir(args.run_dir), device=args.device, which=args.which)
    cfg = session.config
    if args.iters is not None:
        if not 1 <= args.iters <= 10_000:  # train.eval_iters' own bounds: 1e11 batches would be 400 GB
            raise CliError(f"--iters must be between 1 and 10000, got {args.iters}")
        cfg.train.eval_iters = args.iters
    _, data = prepare_data(cfg, tokenizer=session.tokenizer, cache_dir=default_cache_dir())
    if args.full:
        return _eval_full(args, session, data)
    losses = estimate_losses(
        session.model, data, cfg, session.device, dev.choose_precision(session.device, "fp32")
    )
    val = losses["val_loss"]
    result = {
        "run_dir": str(session.run_dir),
        "checkpoint": args.which,
        "step": session.step,
        "val_loss": val,
        "val_ppl": measures.perplexity(val),
        "val_acc": losses["val_acc"],
        "val_bpc": measures.bits_per_char(val, data.val_chars_per_token),
        "train_loss": losses["train_loss"],
        "train_unk": data.stats["train"].unk_share,
        "val_unk": data.stats["val"].unk_share,
        "val_chars_per_token": data.val_chars_per_token,
        "batches": cfg.train.eval_iters,
    }
    if args.json:
        print_json(result)
    else:
        print(
            f"{session.run_dir} ({args.which} checkpoint, step {session.step}, {cfg.train.eval_iters} batches)"
        )
        print(
            f"validation loss {val:.4f}\nperplexity      {result['val_ppl']:.3f}\n"
            f"accuracy        {result['val_acc']:.2%}\nbits per char   {result['val_bpc']:.4f}\n"
            f"training loss   {result['train_loss']:.4f}\n"
            f"<unk> tokens    {result['train_unk']:.2%} of training, {result['val_unk']:.2%} of validation"
        )
        warning = unk_warning(data.stats)
        if warning:
            print(warning)
    return 0


def _eval_full(args, session, data) -> int:
    """``eval --full``: every validation token once (engine/full_eval.py), recorded for the runs list."""
    from lmstudio.engine import full_eval

    result = full_eval.full_split_loss(
        session.model,
        data.val,
        session.config.model.block_size,
        chars_per_token=data.val_chars_per_token,
        device=session.device,
    )
    try:
        full_eval.record(session.run_dir, args.which, session.step, result)
        recorded = True
    except OSError:  # a read-only run folder: the figure is still printed
        recorded = False
    out = {
        "run_dir": str(session.run_dir),
        "checkpoint": args.which,
        "step": session.step,
        **dataclasses.asdict(result),
        "recorded": recorded,
    }
    if args.json:
        print_json(out)
        return 0
    print(
        f"{session.run_dir} ({args.which} checkpoint, step {session.step}): the whole validation split, "
        f"{result.tokens:,} tokens in {result.windows:,} non-overlapping windows of {result.window}"
    )
    print(
        f"validation loss {result.val_loss:.4f}\nperplexity      {result.val_ppl:.3f}\n"
        f"accuracy        {result.val_acc:.2%}\nbits per char   {result.val_bpc:.4f}"
    )
    print(
        "(each window starts afresh: its first token is predicted from one token of context, its last from "
        f"{result.window}; see docs/cli.md)"
    )
    return 0


# ---- corpus ------------------------------------------------------------------------------------------
def cmd_corpus(args) -> int:
    from lmstudio.engine.corpus import corpus_info

    info = corpus_info(args.source)
    data = dataclasses.asdict(info)
    if args.json:
        print_json({k: str(v) if isinstance(v, Path) else v for k, v in data.items()})
        return 0
    print(f"{info.title or info.name}  ({'built-in' if info.builtin else info.path})")
    print(
        f"characters {info.chars:,}  distinct {info.distinct_chars:,}  lines {info.lines:,}  "
        f"bytes {info.bytes:,}  encoding {info.encoding}"
    )
    if info.source:
        print(f"source     {info.source}")
    print("preview:")
    print("  " + str(info.preview)[:400].replace("\n", "\n  "))
    return 0


# ---- generate ----------------------------------------------------------------------------------------
def cmd_generate(args) -> int:
    from lmstudio.config import ConfigError
    from lmstudio.config_fields import section_errors
    from lmstudio.engine.sampling import generate
    from lmstudio.engine.session import Session

    session = Session.load(existing_run_dir(args.run_dir), device=args.device, which=args.which)
    from lmstudio.engine.sampling import fit_prompt

    note = fit_prompt(session, args.prompt).note if args.prompt else ""
    if note:  # e.g. a simplified prompt on a traditional run
        print(f"lmstudio: note: {note}", file=sys.stderr)
    changes = {
        name: value
        for name, value in (
            ("max_tokens", args.max_tokens),
            ("temperature", args.temperature),
            ("top_k", args.top_k),
            ("top_p", args.top_p),
            ("seed", args.seed),
        )
        if value is not None
    }
    cfg = dataclasses.replace(session.config.sample, **changes)
    errors = section_errors("sample", cfg)
    if errors:
        raise ConfigError({k.replace("sample.", "--").replace("_", "-"): v for k, v in errors.items()})
    if not 0 <= args.top <= 1000 or (args.top and not args.json):
        raise CliError(
            "--top N needs --json and 0 <= N <= 1000: it adds the N likeliest candidates to each token"
        )
    cancel = threading.Event()
    pieces = []
    with InterruptToStop(cancel.set, doing="stopping") as interrupt:
        if args.stream:
            print(args.prompt, end="", flush=True)
        for step in generate(session, args.prompt, cfg, cancel=cancel, n_top=args.top):
            if args.json:
                print_json(token_json(step, args.top))
            elif args.stream:
                print(step.text, end="", flush=True)
            pieces.append(step.text)
    if not args.json:
        print(("" if args.stream else args.prompt + "".join(pieces)), flush=True)
    return interrupt.exit_code if interrupt.interrupted else 0


def token_json(step, top: int = 0) -> dict:
    """One generated token for ``generate --json``: its id, the text it added ("" while a character is
    incomplete), the model's probability, whether it is the unknown token, the probability the UTF-8
    mask removed, and its probability in the distribution it was drawn from (after temperature, top-k,
    top-p); with ``top`` the likeliest candidates (by the model, the chosen one added when not among them)."""
    out = {
        "id": step.token_id,
        "text": step.text,
        "prob": finite_or_none(step.prob),
        "unk": step.unk,
        "masked": step.masked,
        "sampled_prob": finite_or_none(step.sampled_prob),
    }
    if top:
        out["top"] = [
            {"id": c.token_id, "token": c.label, "prob": c.prob, "sampled_prob": c.sampled_prob}
            for c in step.candidates
        ]
    return out


# ---- inspect -----------------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    import numpy as np

    from lmstudio import matrix_export as export
    from lmstudio.engine import inspect
    from lmstudio.engine.session import Session

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".csv"):
        raise CliError(f"--out must end in .png or .csv, got {out.name!r}")
    session = Session.load(existing_run_dir(args.run_dir), device="cpu", which=args.which)
    from lmstudio.cli_views import VIEWS, inspect_view

    if args.text:
        from lmstudio.engine.sampling import fit_prompt

        note = fit_prompt(session, args.text).note  # e.g. simplified text on a traditional run
        if note:
            print(f"lmstudio: note: {note}", file=sys.stderr)

    if args.what in VIEWS:
        return inspect_view(args, session, out)
    if not args.text:
        raise CliError(f"--what {args.what} needs --text: the text to run through the model")
    what = args.what
    if what == "attention" and session.config.model.arch != "transformer":
        what = "hidden"  # recurrent models have no attention: their hidden state is the natural default
    if what == "attention":
        tokens, maps = inspect.attention(session, args.text)  # (L, H, T, T)
        layer = _index(args.layer, maps.shape[0], "--layer", "layers")
        if args.head is None and out.suffix.lower() == ".png":
            matrix = export.tile(maps[layer])  # every head of the layer, side by side
            rows = cols = None
            caption = f"attention, layer {layer}, all {maps.shape[1]} heads"
        else:
            head = _index(args.head or 0, maps.shape[1], "--head", "heads")
            matrix, rows, cols = maps[layer, head], tokens, tokens
            caption = f"attention, layer {layer}, head {head} (rows: queries, columns: keys)"
    else:
        tokens, acts = inspect.activations(session, args.text)
        if what not in acts:
            raise CliError(f"this model records no {what!r}; choose one of: {', '.join(sorted(acts))}")
        layer = _index(args.layer, acts[what].shape[0], "--layer", "layers")
        matrix = acts[what][layer]  # (T, H)
        rows, cols = tokens, [str(j) for j in range(matrix.shape[1])]
        caption = f"{what}, layer {layer} (rows: tokens, columns: units)"
    matrix = np.asarray(matrix)
    try:
        if out.suffix.lower() == ".png":
            export.save_matrix_png(matrix, out, rows, cols, caption=caption)
        else:
            export.save_matrix_csv(matrix, out, rows, cols)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out} ({caption}; {len(tokens)} tokens)")
    return 0


def _index(value: int, size: int, flag: str, what: str) -> int:
    if not -size <= value < size:
        raise CliError(f"{flag} {value} is out of range: the model has {size} {what} (0 to {size - 1})")
    return value % size


# ---- bakeoff -----------------------------------------------------------------------------------------
def cmd_bakeoff(args) -> int:
    from lmstudio.engine import bakeoff
    from lmstudio.engine import checkpoint as ckpt
    from lmstudio.engine.trainer import TrainControl

    if not 0 < args.budget <= 7 * 86_400:
        raise CliError("--budget must be a positive number of seconds, at most a week (604800)")
    if not 0 <= args.seed < 2**63:
        raise CliError("--seed must be between 0 and 2**63 - 1")
    archs = tuple(a.strip() for a in args.archs.split(",") if a.strip())
    unknown = [a for a in archs if a not in bakeoff.ARCH_ORDER]
    if unknown or not archs:
        raise CliError(
            f"--archs: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(bakeoff.ARCH_ORDER)}"
        )
    root = Path(args.root) if args.root else ckpt.default_runs_dir()
    control = TrainControl()
    done = None
    failed = False
    with InterruptToStop(control.stop) as interrupt:
        for event in bakeoff.run_bakeoff(
            args.corpus,
            args.budget,
            root,
            archs=archs,
            tokenizer=args.tokenizer,
            seed=args.seed,
            control=control,
            overrides=list(args.set),
            cache_dir=ckpt.default_cache_dir(),
        ):
            kind = type(event).__name__
            if kind == "BakeoffStarted":
                print(
                    f"[{event.index + 1}/{event.total}] {event.arch}: {event.budget:g} s of training "
                    f"into {event.run_dir}",
                    file=sys.stderr,
                    flush=True,
                )
            elif kind == "FullEvalMetrics":
                print(f"    whole validation split: {event.val_loss:.4f}", file=sys.stderr, flush=True)
            elif kind == "Failed":
                failed = True
                print_error(event.message)
            elif kind == "BakeoffDone":
                done = event
    rows = done.rows if done is not None else []
    if args.json:
        print_json(
            {"corpus": args.corpus, "budget": args.budget, "rows": [dataclasses.asdict(r) for r in rows]}
        )
    else:
        print(f"\nBake-off on {args.corpus}, {args.budget:g} s of training each ({args.tokenizer} tokens):\n")
        print(bakeoff.table_markdown(rows))
        print("\nValidation loss (running estimate) by training time:\n")
        print(bakeoff.curve_table({r.arch: r.run_dir for r in rows}, args.budget))
        print(
            "\nThe runs are ordinary run folders: tick them on the Runs tab and plot against wall-clock seconds."
        )
    if interrupt.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_USER_ERROR if failed else 0


# ---- export ------------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    run_dir = existing_run_dir(args.run_dir)
    if args.format == "hf":
        if args.step:
            raise CliError("--step is for --format onnx (a Hugging Face model caches on its own)")
        from lmstudio.engine.export_hf import export_hf

        result = export_hf(run_dir, args.out, which=args.which, overwrite=args.force)
    else:
        from lmstudio.engine.export_onnx import export_onnx

        result = export_onnx(run_dir, args.out, which=args.which, overwrite=args.force, step=args.step)
    print(result.summary())
    for note in result.notes:
        print(f"  note: {note}")
    print("How to load it: docs/export.md" + (" or README.md in the folder" if args.format == "hf" else ""))
    return 0


# ---- runs, presets -----------------------------------------------------------------------------------
def cmd_runs(args) -> int:
    from lmstudio.run_list import scan_runs

    runs, skipped = scan_runs(args.root)
    for bad in skipped:  # named on stderr, so `--json` output stays one run per line
        print(f"lmstudio: skipped {bad.path}: {bad.reason}", file=sys.stderr)
    if args.json:
        for run in runs:
            print_json(dataclasses.asdict(run))
        return 0
    if not runs:
        print("no runs yet; start one with `lmstudio train --preset tiny_tang`")
    for run in runs:
        best = f"{run.best_val_loss:.4f}" if run.best_val_loss is not None else "-"
        full = f"{run.full_val_loss:.4f}" if run.full_val_loss is not None else "-"
        busy = f"  (training in process {run.training_pid})" if run.training_pid is not None else ""
        print(
            f"{run.name:24s} {run.arch:11s} {run.corpus:18s} step {run.steps:>6}/{run.max_steps:<6} "
            f"best val {best:>7}  full val {full:>7}  {run.state_text:28s} {run.path}{busy}"
        )
    return 0


def cmd_presets(args) -> int:
    from lmstudio.resources import list_presets, preset_path

    for name in list_presets():
        first = preset_path(name).read_text(encoding="utf-8").splitlines()[:1]
        about = first[0].lstrip("# ").strip() if first and first[0].startswith("#") else ""
        print(f"{name:20s} {about}")
    return 0
