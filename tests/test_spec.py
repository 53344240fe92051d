"""The thumbnail spec: size parsing, validation, format negotiation, safe stems and thumbnail names."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from support.backends import needs_opencv

from thumbify.errors import InvalidOptions, NotAcceptable, message_of
from thumbify.spec import (
    ALPHA_FORMATS,
    EXTENSIONS,
    MAX_SIDE,
    MAX_SIZES,
    MEDIA_TYPES,
    MIN_SIDE,
    Crop,
    Fit,
    Format,
    Keep,
    Size,
    ThumbnailSpec,
    negotiate_format,
    parse_colour,
    safe_stem,
    thumbnail_name,
)

# -- Size.parse -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("256", (256, 256)),
        ("320x200", (320, 200)),
        ("320X200", (320, 200)),
        ("320×200", (320, 200)),
        (" 320 x 200 ", (320, 200)),
        ("8", (8, 8)),
        ("4096", (4096, 4096)),
        ("4096x8", (4096, 8)),
        ("0256", (256, 256)),
    ],
)
def test_size_parse_accepts(text: str, expected: tuple[int, int]) -> None:
    size = Size.parse(text)
    assert (size.width, size.height) == expected
    assert str(size) == f"{expected[0]}x{expected[1]}"


@pytest.mark.parametrize(
    "text",
    ["0", "7", "5000", "4097", "256x0", "0x256", "256x5000", "999999x1"],
)
def test_size_parse_rejects_out_of_range_sides(text: str) -> None:
    with pytest.raises(ValueError, match=f"between {MIN_SIDE} and {MAX_SIDE}"):
        Size.parse(text)


@pytest.mark.parametrize(
    "text",
    ["", " ", "abc", "-256", "256.5", "256x", "x256", "256x200x100", "1e3", "256px", "256,320", "0x100", "١٢٨"],
)
def test_size_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError) as info:
        Size.parse(text)
    assert str(info.value)  # a message the client can read


def test_size_model_enforces_bounds_too() -> None:
    with pytest.raises(ValidationError):
        Size(width=4, height=100)
    with pytest.raises(ValidationError):
        Size(width=100, height=MAX_SIDE + 1)


def test_size_is_hashable_and_compares_by_value() -> None:
    assert Size.parse("256") == Size.parse("256x256")
    assert len({Size.parse("256"), Size.parse("256x256"), Size.parse("320x200")}) == 2


# -- ThumbnailSpec ----------------------------------------------------------------------------------------------------


def test_spec_defaults() -> None:
    spec = ThumbnailSpec()
    assert spec.sizes == [Size(width=256, height=256)]
    assert (spec.fit, spec.crop, spec.format, spec.quality) == (Fit.inside, Crop.centre, Format.jpeg, 80)
    assert spec.background == "#ffffff" and spec.background_rgba == (255, 255, 255, 255)


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [("format", "JPEG", Format.jpeg), ("format", " WebP ", Format.webp), ("fit", "Cover", Fit.cover)]
    + [("crop", "ATTENTION", Crop.attention)],
)
def test_spec_option_names_match_in_any_case(field: str, text: str, value: object) -> None:
    assert getattr(ThumbnailSpec(**{field: text}), field) is value


def test_spec_errors_read_naturally() -> None:
    """The validators' own words, without pydantic's `Value error, ` prefix."""
    with pytest.raises(ValidationError) as info:
        ThumbnailSpec(sizes="256,big", background="red")
    messages = {e["loc"][0]: message_of(e) for e in info.value.errors()}
    assert messages == {
        "sizes": "'big' is not a size: use a longest side like 256 or a box like 320x200",
        "background": "'red' is not a colour: use #rrggbb or #rrggbbaa",
    }


def test_spec_sizes_from_a_comma_separated_string() -> None:
    spec = ThumbnailSpec(sizes="256, 320x200 ,64,")
    assert [str(s) for s in spec.sizes] == ["256x256", "320x200", "64x64"]


def test_spec_sizes_from_a_list_of_strings_ints_and_objects() -> None:
    spec = ThumbnailSpec(sizes=["320x200", 128, {"width": 10, "height": 20}, Size(width=50, height=60)])
    assert [str(s) for s in spec.sizes] == ["320x200", "128x128", "10x20", "50x60"]


def test_spec_duplicate_sizes_are_kept_once_in_order() -> None:
    spec = ThumbnailSpec(sizes="64,256,64,256x256,128")
    assert [str(s) for s in spec.sizes] == ["64x64", "256x256", "128x128"]


@pytest.mark.parametrize("count", [1, MAX_SIZES])
def test_spec_accepts_one_to_eight_sizes(count: int) -> None:
    sizes = ",".join(str(16 + i) for i in range(count))
    assert len(ThumbnailSpec(sizes=sizes).sizes) == count


@pytest.mark.parametrize("sizes", ["", " , ", [], ",".join(str(16 + i) for i in range(MAX_SIZES + 1))])
def test_spec_rejects_no_sizes_or_too_many(sizes) -> None:
    with pytest.raises(ValidationError):
        ThumbnailSpec(sizes=sizes)


@pytest.mark.parametrize("sizes", ["256,abc", "256,0", "5000", [True], None, 256])
def test_spec_rejects_bad_sizes_with_a_validation_error(sizes) -> None:
    # Always pydantic's ValidationError (the API turns it into a 422), never a TypeError from deep inside.
    with pytest.raises(ValidationError):
        ThumbnailSpec(sizes=sizes)


@pytest.mark.parametrize("quality", [1, 50, 100, "75"])
def test_spec_quality_in_bounds(quality) -> None:
    assert ThumbnailSpec(quality=quality).quality == int(quality)


@pytest.mark.parametrize("quality", [0, -1, 101, 1000, 50.5, "high"])
def test_spec_quality_out_of_bounds(quality) -> None:
    with pytest.raises(ValidationError):
        ThumbnailSpec(quality=quality)


@pytest.mark.parametrize("fmt", ["jpeg", "webp", "png", "avif", "gif"])
def test_spec_formats(fmt: str) -> None:
    assert ThumbnailSpec(format=fmt).format is Format(fmt)


@pytest.mark.parametrize("fmt", ["jpg", "tiff", "heic", "JPEG2000", "", "auto"])
def test_spec_rejects_other_formats(fmt: str) -> None:
    with pytest.raises(ValidationError):
        ThumbnailSpec(format=fmt)


@pytest.mark.parametrize("fit", ["inside", "cover", "fill", "contain"])
def test_spec_fits(fit: str) -> None:
    assert ThumbnailSpec(fit=fit).fit is Fit(fit)


@pytest.mark.parametrize("field, value", [("fit", "stretch"), ("crop", "center"), ("crop", "smart")])
def test_spec_rejects_unknown_fit_and_crop(field: str, value: str) -> None:
    with pytest.raises(ValidationError):
        ThumbnailSpec(**{field: value})


def test_spec_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        ThumbnailSpec(width=256)


@pytest.mark.parametrize(
    "text, normalised, rgba",
    [
        ("#ffffff", "#ffffff", (255, 255, 255, 255)),  # opaque: shown as the README writes it
        ("#FFFFFFFF", "#ffffff", (255, 255, 255, 255)),
        ("#ABCDEF", "#abcdef", (0xAB, 0xCD, 0xEF, 255)),
        ("abcdef", "#abcdef", (0xAB, 0xCD, 0xEF, 255)),
        ("#11223344", "#11223344", (0x11, 0x22, 0x33, 0x44)),
        ("#00000000", "#00000000", (0, 0, 0, 0)),
        (" #102030 ", "#102030", (16, 32, 48, 255)),
    ],
)
def test_spec_background_colours(text: str, normalised: str, rgba: tuple[int, int, int, int]) -> None:
    spec = ThumbnailSpec(background=text)
    assert spec.background == normalised
    assert spec.background_rgba == rgba
    assert parse_colour(text) == rgba


@pytest.mark.parametrize(
    "text", ["#fff", "white", "#abcdefgg", "#abcdef1", "#abcdef12345", "", "rgb(1,2,3)", "##abcdef"]
)
def test_spec_rejects_bad_background_colours(text: str) -> None:
    with pytest.raises(ValidationError, match="colour"):
        ThumbnailSpec(background=text)
    with pytest.raises(ValueError):
        parse_colour(text)


def test_spec_round_trips_through_json() -> None:
    spec = ThumbnailSpec(
        sizes="256,320x200", fit="cover", crop="attention", format="webp", quality=90, background="#123456"
    )
    again = ThumbnailSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    stored = json.loads(spec.model_dump_json())
    assert stored["sizes"] == [{"width": 256, "height": 256}, {"width": 320, "height": 200}]


def test_spec_round_trips_through_json_with_background() -> None:
    spec = ThumbnailSpec(sizes="64", background="#12345678")
    again = ThumbnailSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again.background_rgba == (0x12, 0x34, 0x56, 0x78)


def test_format_tables_are_complete() -> None:
    assert set(EXTENSIONS) == set(MEDIA_TYPES) == set(Format)
    assert Format.jpeg not in ALPHA_FORMATS
    assert ALPHA_FORMATS == {Format.png, Format.webp, Format.avif, Format.gif}


# -- negotiate_format ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "accept, has_alpha, expected",
    [
        (None, False, Format.jpeg),  # no Accept takes anything: the default
        (None, True, Format.png),
        ("", False, Format.jpeg),
        (",,;;,", False, Format.jpeg),  # nothing readable: as if not sent
        ("*/*", False, Format.jpeg),  # a wildcard gets the safe default, not a modern format it may not decode
        ("image/*", True, Format.png),
        ("image/avif,image/webp,image/*,*/*;q=0.8", False, Format.avif),
        ("image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5", True, Format.avif),
        ("image/webp,*/*", False, Format.webp),
        ("image/webp,*/*", True, Format.webp),
        ("image/avif;q=0,image/webp", False, Format.webp),
        ("image/avif;Q=0,image/webp", False, Format.webp),  # parameter names are case-insensitive
        ("image/avif;q=0.1", False, Format.avif),  # a low q still accepts
        ("IMAGE/AVIF", False, Format.avif),
        ("  image/webp  ;  q=0.5 ", False, Format.webp),
        ("image/png", False, Format.png),  # what the client takes, even for an opaque image
        ("image/jpeg", True, Format.jpeg),  # ... even for one with alpha (flattened onto the background)
        ("image/png,image/jpeg", False, Format.jpeg),  # equals: the default
        ("image/png,image/jpeg", True, Format.png),
        ("image/png;q=1, image/*;q=0.5", False, Format.png),  # q-values decide
        ("image/webp;q=1.0, image/avif;q=0.5", False, Format.webp),
        ("image/jpeg;q=0.2, image/avif;q=0.9, image/webp;q=0.9", False, Format.avif),  # equals: avif first
        ("image/jpeg;q=0, image/*", False, Format.png),  # a wildcard with the default excluded: the other classic
        ("image/*;q=0.3, image/webp", True, Format.webp),
        ("text/html, image/png;q=0.1", False, Format.png),
    ],
)
def test_negotiate_format(accept: str | None, has_alpha: bool, expected: Format) -> None:
    assert negotiate_format(accept, has_alpha) is expected


@pytest.mark.parametrize(
    "accept",
    [
        "image/gif",
        "text/html,application/xhtml+xml",
        "image/avif; q=0, image/webp; q=0",
        "image/*;q=0",
        "*/*;q=0",
        "image/avif;q=abc",  # an unreadable q counts as not accepted
        "image/jpeg;q=0,image/png;q=0,image/webp;q=0,image/avif;q=0,*/*",  # `*/*` does not undo a named q=0
    ],
)
@pytest.mark.parametrize("has_alpha", [False, True])
def test_negotiate_format_refuses_when_nothing_fits(accept: str, has_alpha: bool) -> None:
    with pytest.raises(NotAcceptable, match="takes none of image/jpeg, image/webp, image/png, image/avif"):
        negotiate_format(accept, has_alpha)


# -- safe_stem, thumbnail_name -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "filename, stem",
    [
        ("photo.jpg", "photo"),
        ("holiday.photo.JPG", "holiday.photo"),
        ("archive.tar.gz", "archive.tar"),
        ("my photo (1).jpeg", "my_photo_1"),
        ("../../etc/passwd", "passwd"),
        ("/abs/path/to/pic.png", "pic"),
        ("C:\\Users\\me\\Pictures\\pic.png", "pic"),
        ("..", "image"),
        ("...", "image"),
        ("../..", "image"),
        ("dir/", "image"),
        (".bashrc", "bashrc"),
        ("a\x00b.jpg", "a_b"),
        ("evil\x00.jpg/../x", "x"),
        ("фото.jpg", "image"),
        ("été 2024.jpg", "t_2024"),
        ("日本語_name.png", "name"),
        ("-_-.png", "image"),
        ("", "image"),
        (None, "image"),
        ("noext", "noext"),
        ("trailingdot.", "trailingdot"),
    ],
)
def test_safe_stem(filename: str | None, stem: str) -> None:
    assert safe_stem(filename) == stem


@pytest.mark.parametrize(
    "filename",
    ["x" * 300 + ".jpg", "a" * 63 + ".b.jpg", "_" * 70 + "abc.png", "../" * 50 + "z" * 100, "\x00\x01\x02" * 40],
)
def test_safe_stem_is_short_safe_ascii(filename: str) -> None:
    stem = safe_stem(filename)
    assert 1 <= len(stem) <= 64
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)
    assert stem[0] not in "._-" and stem[-1] not in "._-"
    assert "/" not in stem and "\\" not in stem


@pytest.mark.parametrize(
    "fmt, name",
    [
        (Format.jpeg, "thumb_photo_256x192.jpg"),
        (Format.webp, "thumb_photo_256x192.webp"),
        (Format.png, "thumb_photo_256x192.png"),
        (Format.avif, "thumb_photo_256x192.avif"),
    ],
)
def test_thumbnail_name(fmt: Format, name: str) -> None:
    assert thumbnail_name("photo", 256, 192, fmt) == name


def test_thumbnail_name_of_a_hostile_upload_name_is_safe() -> None:
    name = thumbnail_name(safe_stem("../../../etc/passwd\x00.png"), 64, 64, Format.png)
    assert name == "thumb_passwd_64x64.png"
    assert "/" not in name


def test_encoder_option_defaults() -> None:
    spec = ThumbnailSpec()
    assert (spec.progressive, spec.keep, spec.optimize_coding, spec.effort) == (False, Keep.none, True, None)
    assert ThumbnailSpec(format="webp").effort == 4 and ThumbnailSpec(format="avif").effort == 2
    assert ThumbnailSpec(format="png", effort=5).effort is None  # ignored where the format has none


@pytest.mark.parametrize(("fmt", "low", "high"), [("webp", 0, 6), ("avif", 0, 9)])
def test_effort_bounds_per_format(fmt: str, low: int, high: int) -> None:
    for effort in (low, high):
        assert ThumbnailSpec(format=fmt, effort=effort).effort == effort
    for effort in (low - 1, high + 1):
        with pytest.raises(InvalidOptions) as info:
            ThumbnailSpec.from_options({"format": [fmt], "effort": [str(effort)]})
        assert [e["field"] for e in info.value.extra["errors"]] == ["effort"]


@pytest.mark.parametrize("keep", ["NONE", "Icc", "copyright"])
def test_keep_values(keep: str) -> None:
    assert ThumbnailSpec(keep=keep).keep is Keep(keep.lower())


def test_facts_is_off_by_default_and_a_bad_value_names_the_field() -> None:
    assert ThumbnailSpec().facts is False
    assert ThumbnailSpec.from_options({"facts": ["TRUE"]})[0].facts is True
    with pytest.raises(InvalidOptions) as info:
        ThumbnailSpec.from_options({"facts": ["maybe"]})
    assert [e["field"] for e in info.value.extra["errors"]] == ["facts"]
    assert ThumbnailSpec.model_validate_json(ThumbnailSpec(facts=True).model_dump_json()).facts is True


def test_encoder_options_round_trip_through_json() -> None:
    spec = ThumbnailSpec(format="avif", progressive=True, keep="copyright", optimize_coding=False, effort=7)
    assert ThumbnailSpec.model_validate_json(spec.model_dump_json()) == spec


def test_spec_carries_its_preset_name_as_a_label() -> None:
    """`preset` is expanded by the API (thumbify/presets.py); the spec keeps the name, checked against the pattern."""
    spec, _ = ThumbnailSpec.from_options({"preset": ["avatar"], "sizes": ["64"]})
    assert spec.preset == "avatar" and ThumbnailSpec.model_validate_json(spec.model_dump_json()) == spec
    assert ThumbnailSpec().preset is None
    for bad in ("Avatar", "-x", "a" * 33, "a b"):
        with pytest.raises(InvalidOptions) as caught:
            ThumbnailSpec.from_options({"preset": [bad]})
        assert [e["field"] for e in caught.value.extra["errors"]] == ["preset"]


def test_focal_point_defaults_and_bounds() -> None:
    assert (ThumbnailSpec().fx, ThumbnailSpec().fy) == (None, None)  # null without crop=focal
    spec = ThumbnailSpec(crop="focal", fx=0.8)
    assert (spec.crop, spec.fx, spec.fy) == (Crop.focal, 0.8, 0.5)
    assert ThumbnailSpec(crop="FOCAL", fx=0, fy=1).fx == 0.0
    assert ThumbnailSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"crop": ["focal"], "fx": ["1.01"]}, "fx"),
        ({"crop": ["focal"], "fy": ["-0.1"]}, "fy"),
        ({"crop": ["focal"], "fx": ["nan"]}, "fx"),
        ({"crop": ["focal"], "fy": ["half"]}, "fy"),
        ({"fx": ["0.3"]}, "fx"),  # without crop=focal it would do nothing: refused
        ({"crop": ["attention"], "fy": ["0.3"]}, "fy"),
    ],
)
def test_bad_focal_points_name_the_field(options: dict, field: str) -> None:
    with pytest.raises(InvalidOptions) as info:
        ThumbnailSpec.from_options(options)
    assert [e["field"] for e in info.value.extra["errors"]] == [field]


def test_a_bad_crop_is_the_one_error_with_a_focal_point() -> None:
    with pytest.raises(InvalidOptions) as info:
        ThumbnailSpec.from_options({"crop": ["eyes"], "fx": ["0.3"]})
    assert [e["field"] for e in info.value.extra["errors"]] == ["crop"]


@needs_opencv
def test_faces_is_a_crop_where_opencv_is_installed() -> None:
    assert ThumbnailSpec(crop="faces").crop is Crop.faces
