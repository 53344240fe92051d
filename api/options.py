"""The job options, from form fields and query parameters, validated into one `ThumbnailSpec`."""

from __future__ import annotations

from thumbify.batches import BATCH_EVENTS
from thumbify.callback_url import MAX_LENGTH
from thumbify.errors import InvalidOptions
from thumbify.spec import COLOUR_RE, MAX_SIZES, Crop, Fit, Format, ThumbnailSpec

SPEC_OPTIONS = ("sizes", "fit", "crop", "format", "quality", "background")
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
    "`entropy` (the busiest part).",
    "format": "`jpeg` (default), `webp`, `png`, `avif`, or `auto`: the format the `Accept` header weighs highest "
    "(q-values; among equals avif, then webp, when named, else jpeg, or png for images with alpha); `406` when it "
    "takes none of them.",
    "quality": "Encoder quality 1..100 (default 80).",
    "background": "Colour for `contain` padding and for flattening alpha into JPEG: `#rrggbb` or `#rrggbbaa` "
    "(default `#ffffff`).",
    "callback_url": "Where to POST the job when it ends (a signed Standard Webhooks delivery, retried; see the "
    "README): https, to a public address (default: the API key's callback URL, if it has one).",
}
EXAMPLES: dict[str, object] = {
    "sizes": "256,640x480",
    "fit": "cover",
    "crop": "attention",
    "format": "webp",
    "quality": 80,
    "background": "#ffffff",
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


def spec_options(options: dict[str, list[str]]) -> dict[str, list[str]]:
    """The options that make the `ThumbnailSpec`."""
    return {name: values for name, values in options.items() if name in SPEC_OPTIONS}


def validate_early(query: dict[str, list[str]], extra: tuple[str, ...] = ()) -> None:
    """Options given in the query are checked before the body is read, so a bad request costs no upload."""
    if query:
        ThumbnailSpec.from_options(spec_options(collect(query, {}, extra)))


# The documented grammar of `sizes` (the parser also takes spaces, `X` and `×`).
_SIZE = "[0-9]{1,4}(x[0-9]{1,4})?"
SIZES_PATTERN = f"^{_SIZE}(,{_SIZE}){{0,{MAX_SIZES - 1}}}$"
DEFAULTS = {name: field.default for name, field in ThumbnailSpec.model_fields.items() if name != "sizes"}


def _option_schemas() -> dict[str, dict]:
    """Each option's form field: its type, bounds or choices (names match in any case), default and description."""
    enum = {"fit": [f.value for f in Fit], "crop": [c.value for c in Crop], "format": [f.value for f in Format]}
    enum["format"].append("auto")
    schemas: dict[str, dict] = {
        "sizes": {"type": "string", "pattern": SIZES_PATTERN, "default": "256"},
        "quality": {"type": "integer", "minimum": 1, "maximum": 100, "default": DEFAULTS["quality"]},
        "background": {"type": "string", "pattern": COLOUR_RE.pattern, "default": DEFAULTS["background"]},
        "callback_url": {"type": "string", "format": "uri", "maxLength": MAX_LENGTH},
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
        "description": "The image: JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF (judged by content).",
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
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": props}}
            },
        }
    }
