"""Which backend this node runs."""

from __future__ import annotations

import logging

from gpu_worker.backends.base import Backend
from gpu_worker.backends.vips import VipsBackend, configure_vips
from thumbify.settings import Settings

log = logging.getLogger("thumbify.worker")


def select_backend(settings: Settings) -> Backend:
    configure_vips(settings.vips_concurrency)
    import pyvips

    log.info(
        "backend: vips (CPU, libvips %s); the GPU backends are not part of this build yet",
        ".".join(str(pyvips.version(i)) for i in range(3)),
    )
    return VipsBackend()
