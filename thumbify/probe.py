"""What an upload is, judged by its magic bytes and its header alone (no pixel is decoded here)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from thumbify.errors import CorruptImage, TooManyPixels, UnsupportedMedia

# Formats we accept, each with the one libvips loader allowed to open it (never the generic sniffing loader,
# so a file that claims to be a JPEG can never reach the SVG, PDF or ImageMagick loaders).
LOADERS = {
    "jpeg": "jpegload",
    "png": "pngload",
    "webp": "webpload",
    "tiff": "tiffload",
    "gif": "gifload",
    "heif": "heifload",
}
_HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"hevc",
    b"hevx",
    b"heim",
    b"heis",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
    b"avif",
    b"avis",
}
SNIFF_BYTES = 32


def sniff(head: bytes) -> str | None:
    """The format named by the first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[4:8] == b"ftyp" and (head[8:12] in _HEIF_BRANDS):
        return "heif"
    return None


@dataclass(frozen=True)
class SourceInfo:
    format: str
    width: int  # as displayed, after EXIF orientation
    height: int
    bytes: int
    pages: int = 1
    has_alpha: bool = False
    orientation: int = 1

    def public(self, filename: str) -> dict:
        data = asdict(self)
        data.pop("orientation")
        return {"filename": filename, **data}


def open_image(path: Path | str, fmt: str, **options):
    """Open with the format's own loader; libvips reads only the header until pixels are asked for."""
    import pyvips

    return getattr(pyvips.Image, LOADERS[fmt])(str(path), **options)


def probe(path: Path, max_pixels: int) -> SourceInfo:
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
    size = path.stat().st_size
    if not head:
        raise UnsupportedMedia("the upload is empty")
    fmt = sniff(head)
    if fmt is None:
        raise UnsupportedMedia("not an image we accept: JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF (judged by content)")
    import pyvips

    try:
        image = open_image(path, fmt, access="sequential")
        width, height = image.width, image.height
        pages = image.get("n-pages") if image.get_typeof("n-pages") else 1
        orientation = image.get("orientation") if image.get_typeof("orientation") else 1
        has_alpha = bool(image.hasalpha())
    except pyvips.Error as exc:
        raise CorruptImage(f"cannot read the {fmt} header: {vips_message(exc)}") from exc
    if width * height > max_pixels:
        raise TooManyPixels(
            f"{width}x{height} is {width * height:,} pixels; the limit is {max_pixels:,}",
            width=width,
            height=height,
        )
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return SourceInfo(fmt, width, height, size, max(1, int(pages)), has_alpha, int(orientation))


def vips_message(exc: Exception) -> str:
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text
