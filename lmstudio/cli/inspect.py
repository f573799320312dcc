"""``lmstudio inspect``: an attention map, activations (hidden state, gates), the logit lens or the embedding
map of a trained run, saved as PNG or CSV. torch is imported only when the command runs."""

from __future__ import annotations

import sys
from pathlib import Path

from lmstudio.cli.common import CliError, existing_run_dir

VIEWS = ("lens", "embeddings")  # drawn by the engine's export_views rather than as one matrix


def cmd_inspect(args) -> int:
    import numpy as np

    from lmstudio import matrix_export as export
    from lmstudio import matrix_images as images
    from lmstudio.engine import inspect
    from lmstudio.engine.session import Session

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".csv"):
        raise CliError(f"--out must end in .png or .csv, got {out.name!r}")
    session = Session.load(existing_run_dir(args.run_dir), device="cpu", which=args.which)
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
    png, picture, mask = out.suffix.lower() == ".png", None, None
    if what == "attention":
        tokens, maps = inspect.attention(session, args.text)  # (L, H, T, T)
        layer = _index(args.layer, maps.shape[0], "--layer", "layers")
        mask = images.causal_mask(len(tokens))  # the future a query cannot see: grey, not the colour of 0
        if args.head is None and png:
            caption = f"attention, layer {layer}, all {maps.shape[1]} heads (rows: queries, columns: keys)"
            picture = images.render_grid(maps[layer], tokens, caption=caption, mask=mask)
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
    try:
        if png:
            if picture is None:
                picture = images.render_matrix(np.asarray(matrix), rows, cols, caption, mask)
            images.save_png(picture, out)
        else:
            export.save_matrix_csv(np.asarray(matrix), out, rows, cols)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out} ({caption}; {len(tokens)} tokens)")
    return 0


def _index(value: int, size: int, flag: str, what: str) -> int:
    if not -size <= value < size:
        raise CliError(f"{flag} {value} is out of range: the model has {size} {what} (0 to {size - 1})")
    return value % size


def inspect_view(args, session, out: Path) -> int:
    from lmstudio.engine import export_views

    png = out.suffix.lower() == ".png"
    try:
        if args.what == "lens":
            from lmstudio.engine.lens import logit_lens

            if not args.text:
                raise CliError("--what lens needs --text: the text whose predictions to show")
            lens = logit_lens(session, args.text, n_top=5)
            (export_views.save_lens_png if png else export_views.save_lens_csv)(lens, out)
            what = f"{lens.kind}, {len(lens.rows)} rows x {len(lens.tokens)} positions"
            if lens.note:
                print(lens.note)
        else:
            from lmstudio.engine.embeddings import embedding_map, token_counts

            emb = embedding_map(session, args.embedding, counts=token_counts(session))
            (export_views.save_embeddings_png if png else export_views.save_embeddings_csv)(emb, out)
            what = f"{emb.which} embedding, {len(emb.labels)} tokens, PCA; {emb.note}"
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out} ({what})")
    return 0
