"""``lmstudio generate``: text from a trained run, printed at the end, streamed, or one JSON object per token."""

from __future__ import annotations

import dataclasses
import sys
import threading

from lmstudio.cli.common import CliError, InterruptToStop, existing_run_dir, finite_or_none, print_json


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
