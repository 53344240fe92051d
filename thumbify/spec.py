"""The thumbnail spec: what the client asked for, parsed and validated once at the API and carried in the job."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from thumbify.errors import InvalidOptions, NotAcceptable, invalid_options, message_of

MIN_SIDE = 8
MAX_SIDE = 4096
MAX_SIZES = 8
_SIZE_RE = re.compile(r"^\s*(\d{1,6})(?:\s*[xX×]\s*(\d{1,6}))?\s*$", re.ASCII)  # ASCII digits only
COLOUR_RE = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")


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

    model_config = ConfigDict(frozen=True, defer_build=True)  # built on first validation: see ThumbnailSpec
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
    m = COLOUR_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a colour: use #rrggbb or #rrggbbaa")
    hexa = m.group(1) + ("ff" if len(m.group(1)) == 6 else "")
    r, g, b, a = (int(hexa[i : i + 2], 16) for i in range(0, 8, 2))
    return r, g, b, a


class ThumbnailSpec(BaseModel):
    """Every backend obeys this object; it is stored in the job as JSON."""

    # The validator is built on first validation, not at import (~20 ms): a render process is handed specs that
    # were validated already and never validates one.
    model_config = ConfigDict(extra="forbid", defer_build=True)

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

    @field_validator("fit", "crop", "format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """`JPEG`, `Cover`: option values are names, not case-sensitive tokens."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("background")
    @classmethod
    def _check_background(cls, value: str) -> str:
        """Lower-case `#rrggbb`, with `aa` only when not opaque: the default reads `#ffffff`, as documented."""
        r, g, b, a = parse_colour(value)
        return f"#{r:02x}{g:02x}{b:02x}" + (f"{a:02x}" if a != 255 else "")

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

    @classmethod
    def from_options(
        cls, options: Mapping[str, Sequence[str]], accept: str | None = None, has_alpha: bool = False
    ) -> tuple[ThumbnailSpec, bool]:
        """The one parser of the job options, wherever they come from (form fields, query parameters, the CLI):
        each option's values as given (`sizes` may be repeated and each comma-separated; the others once), the
        Accept header for `format=auto`. Returns the spec and whether it was negotiated; InvalidOptions names each
        bad field."""
        values: dict[str, object] = {}
        for name, items in options.items():
            if name == "sizes":
                values[name] = [part for item in items for part in item.split(",") if part.strip()]
            elif len(items) > 1:
                raise InvalidOptions(f"{name}: give it once", errors=[{"field": name, "message": "repeated"}])
            elif items:
                values[name] = items[0].strip()
        negotiated = str(values.get("format", "")).lower() == "auto"
        if negotiated:
            values["format"] = negotiate_format(accept, has_alpha).value
        try:
            return cls.model_validate(values), negotiated
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]) or "options", "message": message_of(e)}
                for e in exc.errors()
            ]
            raise invalid_options(errors) from exc


def parse_accept(accept: str) -> dict[str, float]:
    """An Accept header's media ranges (lower case) and their q-values (RFC 9110 §12.5.1); an unreadable q is 0."""
    ranges: dict[str, float] = {}
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if "/" not in media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    q = 0.0
        ranges[media.lower()] = q
    return ranges


def _weight(fmt: Format, ranges: dict[str, float]) -> tuple[float, bool] | None:
    """The q-value of the most specific range that matches `fmt` (its own type, `image/*`, `*/*`), and whether the
    client named `fmt` itself; None if no range matches."""
    for media in (MEDIA_TYPES[fmt], "image/*", "*/*"):
        if media in ranges:
            return ranges[media], media == MEDIA_TYPES[fmt]
    return None


def negotiate_format(accept: str | None, has_alpha: bool) -> Format:
    """`format=auto`: the format the client weighs highest (q-value, then one it named over one a wildcard covers);
    among equals, a modern format the client named (avif, then webp) before the safe default (jpeg, or png for an
    image with alpha), which is also the choice of a wildcard. No Accept (or none readable) takes anything: the
    default. NotAcceptable when the header excludes every output format."""
    default, other = (Format.png, Format.jpeg) if has_alpha else (Format.jpeg, Format.png)
    ranges = parse_accept(accept or "") or {"*/*": 1.0}
    # Ties, least preferred first: a named format favours the modern ones, a wildcard the safe default.
    named_order = [other, default, Format.webp, Format.avif]
    wildcard_order = [Format.avif, Format.webp, other, default]
    candidates = []
    for fmt in Format:
        weight = _weight(fmt, ranges)
        if weight is not None and weight[0] > 0:
            q, named = weight
            candidates.append(((q, named, (named_order if named else wildcard_order).index(fmt)), fmt))
    if not candidates:
        offered = ", ".join(MEDIA_TYPES[f] for f in Format)
        raise NotAcceptable(f"format=auto: the Accept header ({accept}) takes none of {offered}")
    return max(candidates)[1]


_STEM_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def safe_stem(filename: str | None) -> str:
    """The upload's name reduced to a safe stem: no path, no dots at the ends, a short ASCII word."""
    base = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.strip(".") else base
    stem = _STEM_BAD.sub("_", stem).strip("._-")[:64].rstrip("._-")
    return stem or "image"


def thumbnail_name(stem: str, width: int, height: int, fmt: Format) -> str:
    return f"thumb_{stem}_{width}x{height}.{EXTENSIONS[fmt]}"
