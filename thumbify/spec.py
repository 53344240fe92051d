"""The thumbnail spec: what the client asked for, parsed and validated once at the API and carried in the job."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from thumbify.errors import InvalidOptions, NotAcceptable, invalid_options, message_of

MIN_SIDE = 8
MAX_SIDE = 4096
MAX_SIZES = 8
_SIZE_RE = re.compile(r"^\s*(\d{1,6})(?:\s*[xX×]\s*(\d{1,6}))?\s*$", re.ASCII)  # ASCII digits only
COLOUR_RE = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{8})$")
PRESET_NAME = r"^[a-z0-9][a-z0-9_-]{0,31}$"  # a preset's name (thumbify/presets.py)


class Fit(StrEnum):
    inside = "inside"  # keep aspect, fit in the box, never enlarge
    cover = "cover"  # keep aspect, fill the box exactly, crop the overflow
    fill = "fill"  # stretch to the box exactly
    contain = "contain"  # keep aspect, fit in the box, pad to the box with the background colour


class Crop(StrEnum):
    centre = "centre"
    attention = "attention"
    entropy = "entropy"
    focal = "focal"  # the window nearest the client's focal point (`fx`, `fy`)
    faces = "faces"  # centred on the faces OpenCV's Haar cascade finds; none found: `attention`


class Format(StrEnum):
    jpeg = "jpeg"
    webp = "webp"
    png = "png"
    avif = "avif"
    gif = "gif"  # asked for by name (an animated thumbnail's fallback); never chosen by `auto` for a still


EXTENSIONS = {Format.jpeg: "jpg", Format.webp: "webp", Format.png: "png", Format.avif: "avif", Format.gif: "gif"}
MEDIA_TYPES = {
    Format.jpeg: "image/jpeg",
    Format.webp: "image/webp",
    Format.png: "image/png",
    Format.avif: "image/avif",
    Format.gif: "image/gif",
}
ALPHA_FORMATS = {Format.webp, Format.png, Format.avif, Format.gif}  # GIF's alpha is one bit: libvips thresholds it
# What `animated=true` keeps animation in; `auto` prefers WebP (full colour, 8-bit alpha, smaller: benchmarks/).
ANIMATED_FORMATS = (Format.webp, Format.gif)
STILL_FORMATS = tuple(f for f in Format if f is not Format.gif)  # what `auto` chooses among for a still


class Keep(StrEnum):
    """Which of the source's metadata the thumbnails keep (`finishing.keep_metadata` says exactly what)."""

    none = "none"  # everything stripped
    icc = "icc"  # the output's colour profile (sRGB, which every thumbnail is converted to)
    copyright = "copyright"  # EXIF Copyright and Artist (in a fresh EXIF: no GPS, no camera data) and IPTC


# The encoder's effort (CPU spent for smaller files) per format, as libvips bounds it, and the default of each: WebP
# 4 (libwebp's own), AVIF 2 (keeps the AV1 encoder from being the slowest step by an order of magnitude), GIF 1
# (libvips' 7 quantises each frame ~5x longer, 14 s for a 150-frame 256 px animation, for files ~12% smaller).
EFFORT_RANGES = {Format.webp: (0, 6), Format.avif: (0, 9), Format.gif: (1, 10)}
DEFAULT_EFFORT = {Format.webp: 4, Format.avif: 2, Format.gif: 1}
MAX_EFFORT = max(high for _, high in EFFORT_RANGES.values())


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
    # The focal point, 0..1 of the width and height as displayed (after the EXIF orientation): only with crop=focal,
    # where each defaults to 0.5; null otherwise (given without crop=focal is a 422: it would do nothing).
    fx: Annotated[float | None, Field(ge=0.0, le=1.0, validate_default=True, allow_inf_nan=False)] = None
    fy: Annotated[float | None, Field(ge=0.0, le=1.0, validate_default=True, allow_inf_nan=False)] = None
    format: Format = Format.jpeg
    quality: Annotated[int, Field(ge=1, le=100)] = 80
    background: str = "#ffffff"
    progressive: bool = False  # progressive JPEG, interlaced (Adam7) PNG; WebP and AVIF have no such mode
    keep: Keep = Keep.none
    optimize_coding: bool = True  # JPEG: optimal Huffman tables (benchmarks/README.md, "Encoder options")
    # WebP 0..6, AVIF 0..9; None (as given) becomes the format's default, null for JPEG and PNG, which ignore it.
    effort: Annotated[int | None, Field(ge=0, le=MAX_EFFORT, validate_default=True)] = None
    # The preset the options came from (expanded by the API before parsing; a label here, shown in the job's spec).
    preset: Annotated[str | None, Field(pattern=PRESET_NAME)] = None
    # The image's facts (blurhash, thumbhash, colours, dHash, transparency) in the job's source: off by default, as
    # few clients want them (they add ~2 ms an image, benchmarks/README.md, "Image facts").
    facts: bool = False
    # An animated GIF or WebP stays animated (in WebP or GIF; any other format takes the first frame, as without).
    animated: bool = False

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

    @field_validator("fit", "crop", "format", "keep", mode="before")
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

    @field_validator("crop")
    @classmethod
    def _faces_detector(cls, value: Crop) -> Crop:
        """crop=faces needs OpenCV (the optional `faces` extra): refused up front where it is not installed."""
        if value is Crop.faces and importlib.util.find_spec("cv2") is None:
            raise ValueError("faces needs OpenCV, which this server lacks (pip install 'thumbify[faces]')")
        return value

    @field_validator("fx", "fy")
    @classmethod
    def _focal_point(cls, value: float | None, info: ValidationInfo) -> float | None:
        """0.5 by default with crop=focal; refused without it, where it would silently do nothing (not said again
        where `crop` itself is wrong: its own error is the one to fix)."""
        if "crop" not in info.data:
            return value
        if info.data["crop"] is not Crop.focal:
            if value is not None:
                raise ValueError("only with crop=focal")
            return None
        return 0.5 if value is None else value

    @field_validator("effort")
    @classmethod
    def _effort_of_format(cls, value: int | None, info: ValidationInfo) -> int | None:
        """`effort` within the format's range, its default filled in (the job's spec shows what was used)."""
        fmt = info.data.get("format")
        if fmt not in EFFORT_RANGES:
            return None
        low, high = EFFORT_RANGES[fmt]
        if value is None:
            return DEFAULT_EFFORT[fmt]
        if not low <= value <= high:
            raise ValueError(f"{fmt.value} takes effort {low}..{high}, got {value}")
        return value

    @property
    def background_rgba(self) -> tuple[int, int, int, int]:
        return parse_colour(self.background)

    @classmethod
    def from_options(
        cls,
        options: Mapping[str, Sequence[str]],
        accept: str | None = None,
        has_alpha: bool = False,
        pages: int = 1,
    ) -> tuple[ThumbnailSpec, bool]:
        """The one parser of the job options, wherever they come from (form fields, query parameters, the CLI):
        each option's values as given (`sizes` may be repeated and each comma-separated; the others once), the
        Accept header for `format=auto` (which weighs the source's alpha, and its `pages` when `animated` asks to
        keep them). Returns the spec and whether it was negotiated; InvalidOptions names each bad field."""
        values: dict[str, object] = {}
        for name, items in options.items():
            if name == "sizes":
                values[name] = [part for item in items for part in item.split(",") if part.strip()]
            elif len(items) > 1:
                raise InvalidOptions(f"{name}: give it once", errors=[{"field": name, "message": "repeated"}])
            elif items:
                values[name] = items[0].strip()
        negotiated = str(values.get("format", "")).lower() == "auto"
        try:
            if negotiated:
                spec = cls.model_validate({**values, "format": Format.jpeg.value})  # every other option checked
                animates = spec.animated and pages > 1
                values["format"] = negotiate_format(accept, has_alpha, animates).value
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


def negotiate_format(accept: str | None, has_alpha: bool, animated: bool = False) -> Format:
    """`format=auto`: the format the client weighs highest (q-value, then one it named over one a wildcard covers);
    among equals, a modern format the client named (avif, then webp) before the safe default (jpeg, or png for an
    image with alpha), which is also the choice of a wildcard. No Accept (or none readable) takes anything: the
    default. NotAcceptable when the header excludes every output format.

    `animated` (an animation that `animated=true` keeps): WebP, or GIF where the client takes GIF and not WebP; a
    client that takes neither gets the first frame, negotiated as a still."""
    ranges = parse_accept(accept or "") or {"*/*": 1.0}
    if animated:
        weights = [(weight, fmt) for fmt in ANIMATED_FORMATS if (weight := _weight(fmt, ranges)) and weight[0] > 0]
        if weights:  # equal weights: WebP (the first), then GIF
            return max(weights, key=lambda wf: wf[0][0])[1]
    default, other = (Format.png, Format.jpeg) if has_alpha else (Format.jpeg, Format.png)
    # Ties, least preferred first: a named format favours the modern ones, a wildcard the safe default.
    named_order = [other, default, Format.webp, Format.avif]
    wildcard_order = [Format.avif, Format.webp, other, default]
    candidates = []
    for fmt in STILL_FORMATS:
        weight = _weight(fmt, ranges)
        if weight is not None and weight[0] > 0:
            q, named = weight
            candidates.append(((q, named, (named_order if named else wildcard_order).index(fmt)), fmt))
    if not candidates:
        offered = ", ".join(MEDIA_TYPES[f] for f in STILL_FORMATS)
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
