"""The thumbnail spec: what the client asked for, parsed and validated once at the API and carried in the job."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MIN_SIDE = 8
MAX_SIDE = 4096
MAX_SIZES = 8
_SIZE_RE = re.compile(r"^\s*(\d{1,6})(?:\s*[xX×]\s*(\d{1,6}))?\s*$", re.ASCII)  # ASCII digits only
_COLOUR_RE = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


class Fit(StrEnum):
    inside = "inside"  # keep aspect, fit in the box, never enlarge
    cover = "cover"  # keep aspect, fill the box exactly, crop the overflow
    fill = "fill"  # stretch to the box exactly
    contain = "contain"  # keep aspect, fit in the box, pad to the box with the background colour


class Crop(StrEnum):
    centre = "centre"
    attention = "attention"
    entropy = "entropy"


class Format(StrEnum):
    jpeg = "jpeg"
    webp = "webp"
    png = "png"
    avif = "avif"


EXTENSIONS = {Format.jpeg: "jpg", Format.webp: "webp", Format.png: "png", Format.avif: "avif"}
MEDIA_TYPES = {Format.jpeg: "image/jpeg", Format.webp: "image/webp", Format.png: "image/png", Format.avif: "image/avif"}
ALPHA_FORMATS = {Format.webp, Format.png, Format.avif}


class Size(BaseModel):
    """A box. `256` means a 256×256 box, so its longest side is 256 whatever the fit."""

    model_config = ConfigDict(frozen=True)
    width: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]
    height: Annotated[int, Field(ge=MIN_SIDE, le=MAX_SIDE)]

    @classmethod
    def parse(cls, text: str) -> Size:
        m = _SIZE_RE.match(text)
        if not m:
            raise ValueError(f"{text!r} is not a size: use a longest side like 256 or a box like 320x200")
        w = int(m.group(1))
        h = int(m.group(2)) if m.group(2) else w
        for side in (w, h):
            if not MIN_SIDE <= side <= MAX_SIDE:
                raise ValueError(f"{text!r}: each side must be between {MIN_SIDE} and {MAX_SIDE} px")
        return cls(width=w, height=h)

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_colour(text: str) -> tuple[int, int, int, int]:
    m = _COLOUR_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a colour: use #rrggbb or #rrggbbaa")
    hexa = m.group(1) + ("ff" if len(m.group(1)) == 6 else "")
    r, g, b, a = (int(hexa[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


class ThumbnailSpec(BaseModel):
    """Every backend obeys this object; it is stored in the job as JSON."""

    model_config = ConfigDict(extra="forbid")

    sizes: list[Size] = Field(default_factory=lambda: [Size(width=256, height=256)], min_length=1)
    fit: Fit = Fit.inside
    crop: Crop = Crop.centre
    format: Format = Format.jpeg
    quality: Annotated[int, Field(ge=1, le=100)] = 80
    background: str = "#ffffff"

    @field_validator("sizes", mode="before")
    @classmethod
    def _parse_sizes(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            if len(value) > MAX_SIZES:
                raise ValueError(f"at most {MAX_SIZES} sizes, got {len(value)}")
            return [Size.parse(str(v)) if isinstance(v, str | int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("background")
    @classmethod
    def _check_background(cls, value: str) -> str:
        r, g, b, a = parse_colour(value)
        return f"#{r:02x}{g:02x}{b:02x}{a:02x}"

    @model_validator(mode="after")
    def _unique_sizes(self) -> ThumbnailSpec:
        seen: list[Size] = []
        for size in self.sizes:
            if size not in seen:
                seen.append(size)
        self.sizes = seen
        return self

    @property
    def background_rgba(self) -> tuple[int, int, int, int]:
        return parse_colour(self.background)


def negotiate_format(accept: str | None, has_alpha: bool) -> Format:
    """`format=auto`: the best format the client's Accept header allows (q=0 excludes)."""
    accepted: set[str] = set()
    for item in (accept or "").split(","):
        media, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, val = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val)
                except ValueError:
                    q = 0.0
        if q > 0:
            accepted.add(media.strip().lower())
    for fmt in (Format.avif, Format.webp):
        if MEDIA_TYPES[fmt] in accepted:
            return fmt
    return Format.png if has_alpha else Format.jpeg


_STEM_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(filename: str | None) -> str:
    """The upload's name reduced to a safe stem: no path, no dots at the ends, a short ASCII word."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = _STEM_BAD.sub("_", stem).strip("._-")[:64].rstrip("._-")
    return stem or "image"


def thumbnail_name(stem: str, width: int, height: int, fmt: Format) -> str:
    return f"thumb_{stem}_{width}x{height}.{EXTENSIONS[fmt]}"
