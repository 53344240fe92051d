from support.cuda_emulator import install_fake_cupy

"""A pytest plugin (`-p support.emulated_gpu`, with tests/ on PYTHONPATH) that runs a test process on the CUDA emulator:
`import cupy` gives support/cuda_emulator.py's stand-in, so the GPU code paths above the kernels run on the CPU.
tests/test_gpu_emulated.py starts such processes; never load it into the main test run."""


install_fake_cupy()
