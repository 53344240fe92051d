"""Antialiased separable resampling: filter weight tables, two 1-D passes, a strip driver; CuPy kernels with a
NumPy twin.

Imports only NumPy; CuPy is imported when the "cupy" backend is first asked for, so everything here (and the whole
NumPy path) works on a machine without a GPU.

    from kernels import resample, StripResampler
    thumb = resample(image, 256, 192)                      # NumPy in, NumPy out; CuPy array in, CuPy out
    thumb = resample(image, 256, 192, "bicubic", backend="cupy")
    driver = StripResampler(in_w, in_h, 256, 192, backend="cupy")
    for strip in strips: driver.push(strip)                # rows of any height, top to bottom
    thumb = driver.result()
"""

from kernels.backends import ArrayBackend, cuda_available, get_backend, resample
from kernels.filters import DEFAULT_FILTER, FILTERS, Filter, get_filter
from kernels.strips import StripResampler, resample_strips
from kernels.weights import WeightTable, weight_table

__all__ = [
    "DEFAULT_FILTER",
    "FILTERS",
    "ArrayBackend",
    "Filter",
    "StripResampler",
    "WeightTable",
    "cuda_available",
    "get_backend",
    "get_filter",
    "resample",
    "resample_strips",
    "weight_table",
]
