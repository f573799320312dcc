"""``lmstudio train``: train from a preset (or resume a run), on one process or several through torchrun,
printing progress as text or one JSON object per event."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path

from lmstudio import run_status
from lmstudio.cli.common import (
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
