"""`xmodal train`: fit a model's projection head on image–caption pairs, robust by default.

Registered in cli.app with ``app.command("train")(_run(train))``. A fifth of the photos is held out
of a first fit to choose how much of the model's zero-shot prior the head keeps
(xmodal.search.training.robust); both held-out figures are printed, and a warning when the pairs
are too few to trust them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["train"]


def _figures(recall: dict[str, float] | None) -> str:
    if recall is None:
        return "-"
    t2i = " ".join(f"{recall[f't2i@{k}']:.1f}" for k in (1, 5, 10))
    i2t = " ".join(f"{recall[f'i2t@{k}']:.1f}" for k in (1, 5, 10))
    return f"text→image R@1/5/10 {t2i}   image→text {i2t}"


def train(
    pairs: Annotated[
        Path, typer.Argument(help="Pairs: JSONL {image, captions}, CSV image,caption, or COCO captions JSON.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write the trained head (.pt).")],
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model spec whose towers the head sits on (default: the offline default)."),
    ] = None,
    image_root: Annotated[
        Path | None, typer.Option("--image-root", help="Folder the CSV/COCO image names are relative to.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Training epochs (default: the validated value).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same head.")] = 0,
    held_out: Annotated[
        float,
        typer.Option(
            "--held-out",
            min=0.0,
            max=0.5,
            help="Share of the photos held out to choose the prior mix (0: keep the default mix unchecked).",
        ),
    ] = 0.2,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Train a model's projection head on image–caption pairs (towers frozen), keeping what the model knew."""
    from xmodal.indexer.extras import TRAIN_MODULES, require_extra

    require_extra(TRAIN_MODULES, "xmodal train needs", "train")
    from xmodal.indexer.models.embedding import load_model
    from xmodal.indexer.models.spec import parse_model_spec
    from xmodal.indexer.pairs import read_pairs
    from xmodal.search.training.head import train_projection_head

    data = read_pairs(pairs, image_root)
    spec = parse_model_spec(model)
    loaded = load_model(spec)
    typer.echo(
        f"{len(data)} photos, {sum(len(p.captions) for p in data)} captions; computing tower features (cached)",
        err=True,
    )
    report = train_projection_head(
        loaded,
        data,
        out,
        epochs=epochs,
        seed=seed,
        held_out=held_out,
        on_epoch=lambda e, loss: typer.echo(f"epoch {e:3d}  loss {loss:.4f}", err=True),
    )
    choice = report.choice
    for warning in choice.warnings:
        typer.echo(f"xmodal: warning: {warning}", err=True)
    base = str(spec).split("+")[0]
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "head": str(report.path.absolute()),
                    "photos": report.photos,
                    "captions": report.captions,
                    "prior_mix": choice.prior_mix,
                    "held_out_photos": choice.held_out_photos,
                    "held_out": {
                        "head_alone": choice.head_alone,
                        "chosen": choice.chosen,
                        "prior_alone": choice.prior_alone,
                    },
                    "mean_recall_by_mix": {str(m): round(v, 2) for m, v in choice.by_mix.items()},
                    "warnings": list(choice.warnings),
                }
            )
        )
        return
    if choice.held_out_photos:
        typer.echo(f"held out {choice.held_out_photos} photos (their own pool):")
        typer.echo(f"  head alone          {_figures(choice.head_alone)}")
        typer.echo(f"  with prior mix {choice.prior_mix:.1f}  {_figures(choice.chosen)}")
        if choice.prior_alone is not None:
            typer.echo(f"  prior alone         {_figures(choice.prior_alone)}")
    typer.echo(
        f"head (prior mix {choice.prior_mix:.1f}, fitted on all {report.photos} photos) written to {report.path}; "
        f"use it with --model '{base}+{report.path.absolute()}'"
    )
