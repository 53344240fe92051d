"""The DALI backend as the tests watch it: the real one, noting every batch its pipeline runs, in front of the real
vips backend noting what it was handed (its fallback). Import only where nvidia-dali imports."""

from __future__ import annotations

from pathlib import Path

from gpu_worker.backends.base import Rendition
from gpu_worker.backends.dali import DaliBackend
from gpu_worker.backends.vips import VipsBackend
from thumbify.spec import ThumbnailSpec

MAX_BATCH = 4


class RecordingVips(VipsBackend):
    """The real vips backend, noting which files it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def render(self, path: Path, fmt: str, spec: ThumbnailSpec, stem: str) -> list[Rendition]:
        self.calls.append(path.name)
        return super().render(path, fmt, spec, stem)


class CountingDali(DaliBackend):
    """The real DALI backend, noting the size of every batch its pipeline ran (or failed on)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.runs: list[int] = []

    def _run(self, samples):
        self.runs.append(len(samples))
        return super()._run(samples)


def cpu_dali(**kwargs) -> CountingDali:
    kwargs.setdefault("max_batch", MAX_BATCH)
    return CountingDali("cpu", num_threads=1, fallback=RecordingVips(), **kwargs)
