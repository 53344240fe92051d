"""Our CUDA kernels, run on the CPU: the same `RawKernel` source compiled by the host's C++ compiler under a small
emulation of CUDA's launch, behind a stand-in for the part of CuPy's interface `kernels.cupy_backend` uses.

Why: the CI machines have no GPU, and the kernels' index arithmetic, 64-bit offsets, rounding and clipping, and the
way the Python side passes its arguments are where a GPU-only bug would hide. Here every block and thread of the
launch runs (sequentially), with CUDA's `blockIdx`/`threadIdx`/`gridDim`/`blockDim`, and `__fadd_rn`/`__fmul_rn` as
plain IEEE float operations (compiled with `-ffp-contract=off`, so nothing is fused). Each launch is checked the way
the GPU would need it right: one argument per kernel parameter, arrays of the parameter's element type and
C-contiguous, scalars of exactly the parameter's width (CuPy passes a numpy scalar by its own size, so an int32
given for a `long long` would be garbage on the GPU). What this cannot see: timing, memory bounds on the device,
CuPy's allocator, streams and pinned memory — the GPU tests (tests/test_kernels_gpu.py) are for those.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

COMPILER = shutil.which("g++") or shutil.which("c++")

_SHIM = r"""
#include <math.h>
struct EmuDim3 { unsigned int x, y, z; };
static EmuDim3 blockIdx, threadIdx, gridDim, blockDim;
#define __global__
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
"""

_SIGNATURE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_TYPEDEF = re.compile(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;")
_C_DTYPES = {
    "unsigned char": np.uint8,
    "unsigned short": np.uint16,
    "int": np.int32,
    "long long": np.int64,
    "float": np.float32,
}
_C_SCALARS = {"int": ctypes.c_int, "long long": ctypes.c_longlong, "float": ctypes.c_float}
_CACHE = Path(tempfile.gettempdir()) / "thumbify-cuda-emulator"


class Param:
    def __init__(self, text: str, typedefs: dict[str, str]) -> None:
        words = text.replace("*", " * ").split()
        self.name = words[-1]
        self.pointer = "*" in words
        base = " ".join(w for w in words[:-1] if w not in ("const", "__restrict__", "*"))
        base = typedefs.get(base, base)
        if base not in _C_DTYPES:
            raise ValueError(f"the emulator does not know the C type {base!r} (parameter {text.strip()!r})")
        self.ctype = base
        self.dtype = np.dtype(_C_DTYPES[base])

    def convert(self, kernel: str, index: int, arg):
        where = f"{kernel}: argument {index} ({self.name})"
        if self.pointer:
            if not isinstance(arg, np.ndarray):
                raise TypeError(f"{where} must be an array, got {type(arg).__name__}")
            if arg.dtype != self.dtype:
                raise TypeError(f"{where} is a {self.ctype}*, but the array holds {arg.dtype}")
            if not arg.flags.c_contiguous:
                raise TypeError(f"{where} must be C-contiguous")
            return arg.ctypes.data_as(ctypes.c_void_p)
        if not isinstance(arg, np.generic):
            raise TypeError(f"{where} must be a numpy scalar of {self.dtype} (CuPy passes it by its size)")
        if arg.dtype != self.dtype:
            raise TypeError(f"{where} is a {self.ctype}, but {arg.dtype} was passed")
        return _C_SCALARS[self.ctype](arg.item())


class EmulatedRawKernel:
    """`cupy.RawKernel(code, name)` on the CPU: `kernel(grid, block, args)` runs every block and thread."""

    def __init__(self, code: str, name: str) -> None:
        if COMPILER is None:
            raise RuntimeError("no C++ compiler (g++) to emulate the CUDA kernels with")
        typedefs = {alias: ctype.strip() for ctype, alias in _TYPEDEF.findall(code)}
        signatures = {n: params for n, params in _SIGNATURE.findall(code)}
        if name not in signatures:
            raise ValueError(f"no kernel {name!r} in the source")
        self.name = name
        self.params = [Param(p, typedefs) for p in signatures[name].split(",")]
        launcher = (
            f'extern "C" void emu_launch(unsigned int grid, unsigned int block, {signatures[name]}) {{\n'
            "  gridDim.x = grid; blockDim.x = block;\n"
            "  gridDim.y = gridDim.z = blockDim.y = blockDim.z = 1;\n"
            "  blockIdx.y = blockIdx.z = threadIdx.y = threadIdx.z = 0;\n"
            "  for (unsigned int b = 0; b < grid; ++b) { blockIdx.x = b;\n"
            "    for (unsigned int t = 0; t < block; ++t) { threadIdx.x = t;\n"
            f"      {name}({', '.join(p.name for p in self.params)}); }} }}\n"
            "}\n"
        )
        self._launch = _compile(_SHIM + code + launcher).emu_launch
        self._launch.restype = None

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple) -> None:
        if len(grid) != 1 or len(block) != 1:
            raise TypeError(f"{self.name}: the emulator runs one-dimensional launches, got {grid} x {block}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, {len(args)} were passed")
        converted = [p.convert(self.name, i, a) for i, (p, a) in enumerate(zip(self.params, args, strict=True))]
        self._launch(ctypes.c_uint(grid[0]), ctypes.c_uint(block[0]), *converted)


def _compile(source: str) -> ctypes.CDLL:
    """Build `source` into a shared library once per distinct source (cached in the temp folder)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    _CACHE.mkdir(exist_ok=True)
    lib = _CACHE / f"kernel-{digest}.so"
    if not lib.exists():
        src = _CACHE / f"kernel-{digest}.cpp"
        src.write_text(source)
        tmp = lib.with_suffix(f".{digest}.tmp")
        flags = ["-O2", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC", "-Wall", "-Werror"]
        subprocess.run([COMPILER, *flags, "-o", str(tmp), str(src)], check=True, capture_output=True, text=True)
        tmp.replace(lib)  # atomic: concurrent test processes never load a half-written library
    return ctypes.CDLL(str(lib))


# -- a stand-in for the CuPy module, for the GPU code paths above the kernels ---------------------------------------


class DeviceArray(np.ndarray):
    """A `cupy.ndarray` stand-in: host memory with CuPy's host<->device copy methods and signatures."""

    __module__ = "cupy"  # what kernels.get_backend looks at to pick the CuPy backend for an array

    def set(self, arr: np.ndarray, stream=None) -> None:
        if not isinstance(arr, np.ndarray) or arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("set: the host array must have the device array's shape and dtype (as in CuPy)")
        np.copyto(self, arr)

    def get(self, stream=None, order: str = "C", out: np.ndarray | None = None) -> np.ndarray:
        host = np.array(np.asarray(self).view(np.ndarray), order=order)
        if out is not None:
            np.copyto(out, host)
            return out
        return host


class _Stream:
    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False) -> None:
        pass

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def record(self, event=None) -> SimpleNamespace:
        return SimpleNamespace(synchronize=lambda: None)

    def synchronize(self) -> None:
        pass


class _Device(_Stream):
    def __init__(self, device: int | None = None) -> None:
        if device not in (None, 0):
            raise ValueError(f"the emulator has one device (0), not {device}")


def _device(fn):
    return lambda *args, **kwargs: np.asarray(fn(*args, **kwargs)).view(DeviceArray)


def fake_cupy_module():
    """A module that stands in for `cupy` on a machine without a GPU (`CupyBackend(xp=fake_cupy_module())`, or
    `install_fake_cupy` for code that imports cupy itself): one "device" whose memory is host memory,
    streams and events that are already done, pinned memory that is ordinary memory, and the emulated kernels."""
    import types

    cupy = types.ModuleType("cupy")
    cupy.__dict__.update(
        ndarray=DeviceArray,
        asarray=_device(np.asarray),
        ascontiguousarray=_device(np.ascontiguousarray),
        empty=_device(np.empty),
        zeros=_device(np.zeros),
        full=_device(np.full),
        asnumpy=lambda a, stream=None: np.array(np.asarray(a).view(np.ndarray)),
        RawKernel=EmulatedRawKernel,
        uint8=np.uint8,
        uint16=np.uint16,
        uint32=np.uint32,
        int32=np.int32,
        float32=np.float32,
        __version__="emulated",
    )
    cuda = types.ModuleType("cupy.cuda")
    cuda.__dict__.update(
        Device=_Device,
        Stream=_Stream,
        alloc_pinned_memory=bytearray,
        runtime=SimpleNamespace(getDeviceCount=lambda: 1),
    )
    cupy.cuda = cuda
    return cupy


def install_fake_cupy() -> None:
    """Make `import cupy` give the stand-in (for a test process of its own: never in the main test run)."""
    import sys

    if "cupy" in sys.modules and getattr(sys.modules["cupy"], "__version__", "") != "emulated":
        raise RuntimeError("the real CuPy is already imported: the emulator must not replace it")
    sys.modules["cupy"] = fake_cupy_module()
    sys.modules["cupy.cuda"] = sys.modules["cupy"].cuda
