"""The `keep` option: which metadata a thumbnail carries, read from the source's header (`RenderContext.header`), so
that every backend keeps the same whatever decoded the pixels (libjpeg-turbo, DALI and the tiles' strips carry none).

- `none`: nothing (libvips strips all).
- `icc`: the thumbnail's own profile, libvips' sRGB, which every thumbnail is converted to (`finishing.to_srgb`); never
  the source's profile, which no longer describes the pixels.
- `copyright`: the source's EXIF `Copyright` and `Artist`, written into a fresh EXIF block (libvips rebuilds EXIF from
  the `exif-ifd0-*` fields when there is no `exif-data`), so no GPS, camera, date or maker-note field survives; and
  the IPTC record (creator, rights, captions; JPEG only). Not XMP: it commonly repeats the EXIF, GPS included.
"""

from __future__ import annotations

import re

import pyvips

from thumbify.spec import Keep

COPYRIGHT_TAGS = ("exif-ifd0-Copyright", "exif-ifd0-Artist")
_FLAGS = pyvips.enums.ForeignKeep
# What libvips carries a source's metadata in, all cleared before `keep` adds back what it keeps.
_METADATA = re.compile(r"^(exif-|xmp-data$|iptc-data$|icc-profile-data$)")
# libvips shows an ASCII tag as "VALUE (VALUE, ASCII, N components, M bytes)".
_ASCII_SUFFIX = re.compile(r", ASCII, \d+ components, \d+ bytes\)$")


def exif_text(header: pyvips.Image, field: str) -> str | None:
    """An ASCII EXIF tag's value as the source holds it, or None."""
    if not header.get_typeof(field):
        return None
    shown = str(header.get(field))
    match = _ASCII_SUFFIX.search(shown)
    if match is None:
        return None
    head = shown[: match.start()]  # "VALUE (VALUE": the value is the first half
    value = head[: (len(head) - 2) // 2].strip()
    return value or None


def keep_metadata(img: pyvips.Image, header: pyvips.Image, keep: Keep) -> pyvips.Image:
    """`img` with the metadata `keep` asks for, and nothing else of the source's (see the module's docstring). Save it
    with `save_options(img, keep)`."""
    if keep is Keep.none:
        return img
    img = img.copy()
    for field in img.get_fields():
        if _METADATA.match(field):
            img.remove(field)
    if keep is Keep.copyright:
        for field in COPYRIGHT_TAGS:
            if (value := exif_text(header, field)) is not None:
                img.set_type(pyvips.GValue.gstr_type, field, value)
        if header.get_typeof("iptc-data"):
            img.set_type(pyvips.GValue.blob_type, "iptc-data", header.get("iptc-data"))
    return img


def save_options(img: pyvips.Image, keep: Keep) -> dict[str, object]:
    """The saver's `keep` (and `profile`) for an image `keep_metadata` prepared: a source without rights metadata
    gets no EXIF block at all, rather than libvips' minimal one."""
    if keep is Keep.icc:
        return {"keep": _FLAGS.ICC, "profile": "srgb"}
    flags = _FLAGS.NONE
    if keep is Keep.copyright:
        if any(img.get_typeof(field) for field in COPYRIGHT_TAGS):
            flags |= _FLAGS.EXIF
        if img.get_typeof("iptc-data"):
            flags |= _FLAGS.IPTC
    return {"keep": flags}


__all__ = ["COPYRIGHT_TAGS", "exif_text", "keep_metadata", "save_options"]
