"""The crop flags, shared by `thumbify thumbnail` and `thumbify submit`: unset ones are not sent, so the spec's
defaults (the API's) apply."""

from __future__ import annotations

from typing import Annotated

import typer

CropOpt = Annotated[
    str | None,
    typer.Option(metavar="CROP", help="For cover: centre, attention, entropy, focal (--fx, --fy) or faces"),
]
FxOpt = Annotated[
    float | None, typer.Option(metavar="X", help="crop=focal: the point's x, 0..1 of the width \\[default: 0.5]")
]
FyOpt = Annotated[
    float | None, typer.Option(metavar="Y", help="crop=focal: the point's y, 0..1 of the height \\[default: 0.5]")
]


def crop_options(crop: str | None, fx: float | None, fy: float | None) -> dict[str, str]:
    """The flags given, as the API's option values."""
    given = {"crop": crop, "fx": fx, "fy": fy}
    return {name: str(value) for name, value in given.items() if value is not None}
