"""What every backend shares (thumbor's engine shape): the two small interfaces, the types that cross between the
router, the render processes and the worker, and refusal, the one way an image leaves a GPU backend for vips.

A GPU backend that cannot or should not render an image (DALI's decoders do not take it, it failed alone inside the
pipeline, the tiles backend cannot load) answers `Refused` for it; whoever holds a vips backend renders it there
(`refer`), or hands the refusal on (the GPU render process: the worker renders it in its vips processes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from thumbify.spec import Format, ThumbnailSpec


@dataclass(frozen=True)
class Rendition:
    name: str
    width: int
    height: int
    format: Format
    data: bytes
    # The image's facts (`facts.Facts.as_dict`) when the spec asks for them: on one rendition of the job, the one
    # they were read from; they cross from the render processes to the worker with it.
    facts: dict[str, str | bool] | None = None


@dataclass(frozen=True)
class Refused:
    """A GPU backend's answer for an image it leaves to vips (not an error: vips renders it, or says what is wrong)."""

    reason: str


Item = tuple[Path, str, ThumbnailSpec, str]  # (source path, sniffed format, spec, stem): as `Backend.render` takes
SourceSize = tuple[int, int, int]  # (width, height, pages) as the API's probe stored it
Result = list[Rendition] | Refused | Exception
OnResult = Callable[[int, Result], None]  # (index in the batch, its result), called as each result is known
Route = Literal["dali", "tiles", "vips"]

# What DALI's decoders take here. TIFF (endless variants), GIF and HEIF go to libvips.
DALI_FORMATS = frozenset({"jpeg", "png", "webp"})


def __getattr__(name: str) -> int:
    """`ONE_SHOT_MAX_PIXELS`, the settings' default: past this many pixels an image is not decoded whole in one shot
    (DALI), the tiles backend streams it in strips. Read on first use, not at import: the vips render processes
    import this module and never pydantic-settings."""
    if name == "ONE_SHOT_MAX_PIXELS":
        from thumbify.settings import Settings

        return Settings.model_fields["one_shot_max_pixels"].default
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Backend(Protocol):
    name: str

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        """Every size of `spec` from one decode of the source at `path` (whose format was sniffed as `fmt`).
        Raises `CorruptImage` for an image that cannot be decoded."""
        ...


@runtime_checkable
class BatchBackend(Protocol):
    """A backend that renders several images per call (DALI, tiles, and the router that holds both)."""

    name: str

    def start(self) -> None:
        """Build what the first batch would otherwise pay for (DALI's pipeline, the GPU context)."""
        ...

    def close(self) -> None: ...

    def render_batch(
        self,
        items: Sequence[Item],
        on_result: OnResult | None = None,
        routes: Sequence[Route] | None = None,
    ) -> list[Result]:
        """One result per item, in order: its renditions, `Refused`, or the exception rendering it raised
        (`CorruptImage` for a broken file); `on_result(index, result)` as each is known. One item's failure never
        fails the others. `routes`: where the router sent each item, for a backend that holds several (a backend
        of one kind renders what it is given)."""
        ...


def refer(item: Item, result: Result, fallback: Backend | None) -> Result:
    """`result`, or where it is a refusal and there is a `fallback`, what the fallback makes of the item."""
    if not isinstance(result, Refused) or fallback is None:
        return result
    try:
        return fallback.render(*item)
    except Exception as exc:
        return exc


def render_alone(backend: BatchBackend, item: Item, fallback: Backend) -> list[Rendition]:
    """`Backend.render` for a batch backend: the renditions of a batch of one (by `fallback` if it is refused), or
    what rendering it raised."""
    (result,) = backend.render_batch([item])
    result = refer(item, result, fallback)
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[return-value]  # a refusal was referred just above
