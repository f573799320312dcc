"""``lmstudio inspect RUN --what lens|embeddings``: the logit lens and the embedding map as PNG or CSV.

Kept beside cli_commands.py so that module stays short; torch is imported only when a command runs.
"""

from __future__ import annotations

from pathlib import Path

from lmstudio.cli import CliError

VIEWS = ("lens", "embeddings")


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
