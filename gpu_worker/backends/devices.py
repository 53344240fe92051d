"""What this machine offers the GPU backends, asked in one place: whether CuPy can use a CUDA device (the tiles
backend's kernels, the node's choice in `gpu_worker.backend_choice`). DALI counts its devices itself
(`dali_unavailable`). Imports nothing heavy until asked: a CPU-only install has neither NumPy nor CuPy."""

from __future__ import annotations


def cupy_unavailable(device_id: int = 0) -> str | None:
    """Why CuPy cannot use CUDA device `device_id` here, or None if it can."""
    try:
        import cupy
    except ImportError as exc:
        return f"CuPy is not installed ({exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - no driver, no device: CUDA says which in its own words
        return f"CUDA is not usable: {exc}"
    if count < 1:
        return "CuPy sees no CUDA device"
    if device_id >= count:
        return f"THUMBIFY_GPU_DEVICE_ID={device_id}, but CUDA sees {count} device(s)"
    return None


__all__ = ["cupy_unavailable"]
