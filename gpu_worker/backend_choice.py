"""Which backends this node runs, decided once at start (`THUMBIFY_BACKEND=auto|gpu|cpu`) and said in one log line.

- `cpu`: the vips backend.
- `gpu`: the routed GPU backend (`backends.route.RoutedBackend`: DALI batches, tiles for huge images, vips for what
  DALI refuses), or a loud stop at start (`BackendUnavailable`) where CUDA, CuPy or DALI is missing.
- `auto`: `gpu` where it would start, else `cpu`, with the reason in the log line.

The worker runs the routed backend in one GPU render process fed whole batches, next to its vips render processes
(gpu_worker/worker.py).
"""

from __future__ import annotations

import logging

from gpu_worker.backends.base import Backend
from gpu_worker.backends.devices import cupy_unavailable
from gpu_worker.backends.vips import VipsBackend, configure_vips
from thumbify.animation import AnimationLimits
from thumbify.settings import Settings

log = logging.getLogger("thumbify.worker")


class BackendUnavailable(SystemExit):
    """THUMBIFY_BACKEND=gpu on a node that cannot run it: the worker exits with this message (status 1)."""


def gpu_unavailable(device_id: int = 0) -> str | None:
    """Why this node cannot run the GPU backends on CUDA device `device_id`, or None if it can."""
    try:
        import kernels  # noqa: F401 - the GPU backends' kernels
    except ImportError as exc:  # a CPU-only install: no NumPy
        return f"the GPU modules cannot import ({exc})"
    reason = cupy_unavailable(device_id)
    if reason is not None:
        return reason
    from gpu_worker.backends.dali import dali_unavailable

    reason = dali_unavailable("gpu")
    return f"DALI cannot run: {reason}" if reason else None


def select_backend(settings: Settings) -> Backend:
    """The backend the worker runs, per `settings.backend`. The GPU one defers what goes to vips to the worker's CPU
    render processes (`defer_vips`)."""
    configure_vips(settings.vips_concurrency)
    mode = settings.backend
    vips = VipsBackend(settings.resample_headroom, animation=AnimationLimits.from_settings(settings))
    if mode == "cpu":
        log.info("backend: vips (%s; THUMBIFY_BACKEND=cpu)", _libvips())
        return vips
    reason = gpu_unavailable(settings.gpu_device_id)
    if reason is not None:
        if mode == "gpu":
            message = f"THUMBIFY_BACKEND=gpu, but this node cannot run the GPU backends: {reason}"
            log.error("%s", message)
            raise BackendUnavailable(message)
        log.info("backend: vips (%s; THUMBIFY_BACKEND=auto): no GPU backends here: %s", _libvips(), reason)
        return vips
    from gpu_worker.backends.route import RoutedBackend

    log.info(
        "backend: %s — DALI %s on %s in batches of up to %d; tiles past %s pixels; vips (%s) for what DALI refuses",
        mode,
        _dali_version(),
        _gpu_name(settings.gpu_device_id),
        settings.dali_max_batch,
        f"{settings.one_shot_max_pixels:,}",
        _libvips(),
    )
    return RoutedBackend.from_settings(settings, "gpu", name=mode, defer_vips=True)


def _libvips() -> str:
    import pyvips

    return "CPU, libvips " + ".".join(str(pyvips.version(i)) for i in range(3))


def _dali_version() -> str:
    try:
        import nvidia.dali

        return nvidia.dali.__version__
    except Exception:  # noqa: BLE001 - only for the log line
        return "?"


def _gpu_name(device_id: int) -> str:
    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(device_id)["name"]
        return f"{name.decode() if isinstance(name, bytes) else name} (device {device_id})"
    except Exception:  # noqa: BLE001 - only for the log line
        return f"CUDA device {device_id}"


__all__ = ["BackendUnavailable", "gpu_unavailable", "select_backend"]
