"""The one small interface every backend implements (thumbor's engine shape)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from thumbify.spec import Format, ThumbnailSpec


@dataclass(frozen=True)
class Rendition:
    name: str
    width: int
    height: int
    format: Format
    data: bytes


class Backend(Protocol):
    name: str

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        """Every size of `spec` from one decode of the source at `path` (whose format was sniffed as `fmt`).
        Raises `CorruptImage` for an image that cannot be decoded."""
        ...
