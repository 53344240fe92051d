"""The job options, from form fields and query parameters, validated into one `ThumbnailSpec`."""

from __future__ import annotations

from thumbify.animation import AnimationLimits, check_animation
from thumbify.batches import BATCH_EVENTS
from thumbify.callback_url import MAX_LENGTH
from thumbify.errors import InvalidOptions
from thumbify.presets import Presets
from thumbify.probe import SourceInfo
from thumbify.spec import (
    COLOUR_RE,
    EFFORT_RANGES,
    MAX_EFFORT,
    MAX_SIZES,
    PRESET_NAME,
    Crop,
    Fit,
    Format,
    Keep,
    ThumbnailSpec,
)

SPEC_OPTIONS = (
    "sizes",
    "fit",
    "crop",
    "fx",
    "fy",
    "format",
    "quality",
    "background",
    "progressive",
    "keep",
    "optimize_coding",
    "effort",
    "preset",
    "facts",
    "animated",
)
# Options of the job that are not about the thumbnails (api/callbacks.py reads them).
JOB_OPTIONS = ("callback_url",)
OPTION_NAMES = SPEC_OPTIONS + JOB_OPTIONS
# Options only a batch takes (api/routes/batches.py).
BATCH_OPTIONS = ("batch_events",)

DESCRIPTIONS = {
    "sizes": "1 to 8 sizes, comma-separated (or the field repeated), each `N` (a longest side: `256` is a 256×256 "
    "box) or `WxH` (a box: `320x200`); each side 8..4096 px. Default `256`.",
    "fit": "`inside` (default: keep aspect, fit in the box, never enlarge), `cover` (fill the box, crop the rest), "
    "`fill` (stretch to the box), `contain` (fit in the box, pad with `background`).",
    "crop": "For `cover`: which part to keep: `centre` (default), `attention` (skin, saturation, edges), "
    "`entropy` (the busiest part), `focal` (the window nearest the point `fx`, `fy`), `faces` (centred on the faces "
    "OpenCV's Haar cascade finds; `attention` where it finds none).",
    "fx": "With `crop=focal`: the focal point's x, 0..1 of the width as displayed (after EXIF orientation); default "
    "0.5. `422` without `crop=focal`.",
    "fy": "With `crop=focal`: the focal point's y, 0..1 of the height as displayed; default 0.5. `422` without "
    "`crop=focal`.",
    "format": "`jpeg` (default), `webp`, `png`, `avif`, `gif`, or `auto`: the format the `Accept` header weighs "
    "highest (q-values; among equals avif, then webp, when named, else jpeg, or png for images with alpha; never gif "
    "for a still; for an animation `animated=true` keeps, webp, or gif where only it is taken); `406` when it takes "
    "none of them. GIF ignores `quality`.",
    "quality": "Encoder quality 1..100 (default 80).",
    "background": "Colour for `contain` padding and for flattening alpha into JPEG: `#rrggbb` or `#rrggbbaa` "
    "(default `#ffffff`).",
    "progressive": "`true`: a progressive JPEG (shown coarse first, then refined) or an interlaced (Adam7) PNG. "
    "WebP and AVIF have no such mode and ignore it. Default `false`.",
    "keep": "Which metadata the thumbnails keep: `none` (default: all stripped), `icc` (the sRGB ICC profile of the "
    "thumbnail, which every thumbnail is converted to; not the source's own profile), `copyright` (the source's "
    "EXIF `Copyright` and `Artist` in a fresh EXIF block, and its IPTC record: no GPS, camera or other EXIF, no "
    "XMP, which may carry a location).",
    "optimize_coding": "JPEG: optimal Huffman tables, a few % smaller for a small encoding cost (default `true`; "
    "benchmarks/README.md has the numbers). Other formats ignore it.",
    "effort": "Encoder effort, more CPU for smaller files: WebP 0..6 (default 4), AVIF 0..9 (default 2), GIF 1..10 "
    "(default 1); `422` outside the format's range. JPEG and PNG ignore it.",
    "preset": "A named set of the options above, from the server's presets file (`GET /v1/presets` lists them); "
    "the options given beside it override its own, except for a presets-only key, which may send `preset` alone "
    "(`422` naming the fields otherwise). `422` naming `preset` for a name the server does not know.",
    "facts": "`true`: the job's `source.facts` holds the image's facts, read off the smallest thumbnail's pixels: "
    "`blurhash` (4x3), `thumbhash` (base64), `dominant_color` and `average_color` (`#rrggbb`), `dhash` (a 64-bit "
    "difference hash, 16 hex digits, for finding duplicates) and `transparent`. Default `false` (null).",
    "animated": "`true`: an animated GIF or WebP stays animated: every frame resized (the first "
    "`THUMBIFY_ANIMATION_MAX_FRAMES`, default 200, with their delays and loop count), in WebP or GIF (`format=auto` "
    "prefers WebP); other formats, and still sources, get the first frame as with `false` (the default). `422 "
    "animation-too-large` past `THUMBIFY_ANIMATION_MAX_PIXELS` output pixels over all frames and sizes.",
    "callback_url": "Where to POST the job when it ends (a signed Standard Webhooks delivery, retried; see the "
    "README): https, to a public address (default: the API key's callback URL, if it has one).",
}
EXAMPLES: dict[str, object] = {
    "sizes": "256,640x480",
    "fit": "cover",
    "crop": "focal",
    "fx": 0.3,
    "fy": 0.6,
    "format": "webp",
    "quality": 80,
    "background": "#ffffff",
    "progressive": True,
    "keep": "copyright",
    "optimize_coding": True,
    "effort": 4,
    "preset": "avatar",
    "facts": True,
    "animated": True,
    "callback_url": "https://example.com/thumbify-hook",
}


def collect(
    query: dict[str, list[str]], form: dict[str, list[str]], extra: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Form fields win over query parameters of the same name; anything but the options (and `extra`, those of
    the caller's own) is a typo worth reporting."""
    known = OPTION_NAMES + extra
    unknown = sorted((set(query) | set(form)) - set(known))
    if unknown:
        raise InvalidOptions(
            f"unknown option(s): {', '.join(unknown)}; known: {', '.join(known)}",
            errors=[{"field": name, "message": "unknown option"} for name in unknown],
        )
    return {**query, **form}


def job_options(
    query: dict[str, list[str]],
    form: dict[str, list[str]],
    presets: Presets,
    presets_only: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, list[str]]:
    """The options (`collect`) with the preset, if any, expanded: what the job is made with."""
    return presets.expand(collect(query, form, extra), presets_only)


def spec_options(options: dict[str, list[str]]) -> dict[str, list[str]]:
    """The options that make the `ThumbnailSpec`."""
    return {name: values for name, values in options.items() if name in SPEC_OPTIONS}


def spec_for(
    options: dict[str, list[str]], accept: str | None, info: SourceInfo, limits: AnimationLimits
) -> tuple[ThumbnailSpec, bool]:
    """The spec the options make for a probed source (`format=auto` weighs its alpha and frames), and whether its
    format was negotiated; AnimationTooLarge when `animated=true` would render past the pixel cap."""
    spec, negotiated = ThumbnailSpec.from_options(spec_options(options), accept, info.has_alpha, info.pages)
    check_animation(spec, info.format, info.width, info.height, info.pages, limits)
    return spec, negotiated


def validate_early(query: dict[str, list[str]], presets: Presets, extra: tuple[str, ...] = ()) -> None:
    """Options given in the query are checked before the body is read, so a bad request costs no upload. (A
    presets-only key's rules wait for the form fields, where its `preset` may be.)"""
    if query:
        ThumbnailSpec.from_options(spec_options(job_options(query, {}, presets, extra=extra)))


# The documented grammar of `sizes` (the parser also takes spaces, `X` and `×`).
_SIZE = "[0-9]{1,4}(x[0-9]{1,4})?"
SIZES_PATTERN = f"^{_SIZE}(,{_SIZE}){{0,{MAX_SIZES - 1}}}$"
DEFAULTS = {name: field.default for name, field in ThumbnailSpec.model_fields.items() if name != "sizes"}


def _option_schemas() -> dict[str, dict]:
    """Each option's form field: its type, bounds or choices (names match in any case), default and description."""
    enum = {
        "fit": [f.value for f in Fit],
        "crop": [c.value for c in Crop],
        "format": [f.value for f in Format],
        "keep": [k.value for k in Keep],
    }
    enum["format"].append("auto")
    schemas: dict[str, dict] = {
        "sizes": {"type": "string", "pattern": SIZES_PATTERN, "default": "256"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": DEFAULTS["quality"]},
        "background": {"type": "string", "pattern": COLOUR_RE.pattern, "default": DEFAULTS["background"]},
        "callback_url": {"type": "string", "format": "uri", "maxLength": MAX_LENGTH},
        "preset": {"type": "string", "pattern": PRESET_NAME},
        "progressive": {"type": "boolean", "default": DEFAULTS["progressive"]},
        "optimize_coding": {"type": "boolean", "default": DEFAULTS["optimize_coding"]},
        "facts": {"type": "boolean", "default": DEFAULTS["facts"]},
        "animated": {"type": "boolean", "default": DEFAULTS["animated"]},
        # No default: 0.5 with crop=focal, null (refused) without it.
        "fx": {"type": "number", "minimum": 0, "maximum": 1},
        "fy": {"type": "number", "minimum": 0, "maximum": 1},
        # No default: the format's own (WebP 4, AVIF 2, GIF 1), and its range (WebP's is narrower), are in the
        # description.
        "effort": {"type": "integer", "minimum": min(low for low, _ in EFFORT_RANGES.values()), "maximum": MAX_EFFORT},
    }
    for name, values in enum.items():
        schemas[name] = {"type": "string", "enum": values, "default": DEFAULTS[name].value}
    documented = {"description": DESCRIPTIONS, "examples": {name: [value] for name, value in EXAMPLES.items()}}
    return {name: schemas[name] | {key: values[name] for key, values in documented.items()} for name in OPTION_NAMES}


def openapi_request_body(batch: bool = False) -> dict:
    """The upload as OpenAPI documents it: the `file` and each option once, as a form field. (The options are also
    read from the query string, where they are checked before the upload is read; that is said in prose, so that no
    option is documented twice.) With `batch`, a batch's: several `file` parts, and `batch_events`."""
    image = {
        "type": "string",
        "format": "binary",
        "description": "The image: JPEG, PNG, WebP, TIFF, GIF, AVIF, or HEIF/HEIC with a codec this server decodes "
        "(not the HEVC of phones' HEIC: 415) (judged by content).",
    }
    props: dict[str, dict] = {"file": image, **_option_schemas()}
    if batch:
        props["file"] = {
            "type": "array",
            "items": image,
            "minItems": 1,
            "description": "The images, one `file` part each (at most `THUMBIFY_MAX_BATCH_FILES`, default 100); "
            "each is judged alone.",
        }
        props["batch_events"] = {
            "type": "string",
            "enum": list(BATCH_EVENTS),
            "default": "batch",
            "description": "Which webhooks the callback gets: `batch` (one `batch.completed` when the last job "
            "ends), `jobs` (each job's `job.done`/`job.failed`), `both`.",
        }
    content: dict[str, dict] = {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}}
    }
    if not batch:
        from_bucket = {
            "source_key": {
                "type": "string",
                "minLength": 1,
                "maxLength": 1024,
                "description": "A key in the bucket (relative to `THUMBIFY_S3_PREFIX`): the job is made of that "
                "object where it lies (scope `admin`, or a key's `--source-prefix`). Needs S3 storage.",
            },
            "options": {"type": "object", "properties": _option_schemas(), "additionalProperties": False},
        }
        content["application/json"] = {
            "schema": {"type": "object", "required": ["source_key"], "properties": from_bucket}
        }
    return {"requestBody": {"required": True, "content": content}}
