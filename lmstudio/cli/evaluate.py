"""``lmstudio eval``: validation loss, perplexity, accuracy and bits per character of a trained run, from
batches or (``--full``) from every validation token once."""

from __future__ import annotations

import dataclasses

from lmstudio.cli.common import CliError, existing_run_dir, print_json


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
