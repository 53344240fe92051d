"""A pytest plugin (`-p emulated_gpu`, with tests/ on PYTHONPATH) that runs a test process on the CUDA emulator:
`import cupy` gives tests/cuda_emulator.py's stand-in, so the GPU code paths above the kernels run on the CPU.
tests/test_gpu_emulated.py starts such processes; never load it into the main test run."""

from cuda_emulator import install_fake_cupy

install_fake_cupy()
