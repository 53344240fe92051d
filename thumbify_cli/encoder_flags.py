"""The encoder options' flags (and `--facts`; `--animated`, how an animation is encoded), shared by `thumbify
thumbnail` and `thumbify submit`: unset ones are not sent, so the spec's defaults (the API's) apply."""

from __future__ import annotations

from typing import Annotated

import typer

ProgressiveOpt = Annotated[
    bool | None, typer.Option("--progressive/--no-progressive", help="Progressive JPEG, interlaced PNG \\[default: no]")
]
KeepOpt = Annotated[str | None, typer.Option(metavar="KEEP", help="Metadata kept: none, icc or copyright")]
OptimizeCodingOpt = Annotated[
    bool | None,
    typer.Option("--optimize-coding/--no-optimize-coding", help="JPEG: optimal Huffman tables \\[default: yes]"),
]
EffortOpt = Annotated[int | None, typer.Option(metavar="N", help="WebP 0..6 (4), AVIF 0..9 (2), GIF 1..10 (1)")]
FactsOpt = Annotated[
    bool, typer.Option("--facts", help="Blurhash, thumbhash, colours, dHash and transparency of each image")
]
AnimatedOpt = Annotated[
    bool | None,
    typer.Option(
        "--animated/--no-animated", help="Animated GIF/WebP stay animated (in webp or gif output) \\[default: no]"
    ),
]


def encoder_options(
    progressive: bool | None,
    keep: str | None,
    optimize_coding: bool | None,
    effort: int | None,
    facts: bool = False,
    animated: bool | None = None,
) -> dict[str, str]:
    """The flags given, as the API's option values."""
    given = {
        "progressive": progressive,
        "keep": keep,
        "optimize_coding": optimize_coding,
        "effort": effort,
        "facts": True if facts else None,
        "animated": animated,
    }
    return {name: str(value).lower() for name, value in given.items() if value is not None}
