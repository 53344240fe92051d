"""What the tests are built from, one module per kind of thing: a running service (service.py), problem+json
answers (problems.py), processes read from /proc (processes.py), `thumbify serve` runs (serve.py), API keys
(keys.py), test images (images.py, corpus.py, mutate.py), rendered thumbnails (renditions.py), reference resamplers
(kernels.py), fault injection (faults.py), an S3 server (s3server.py) and the CUDA emulator (cuda_emulator.py,
emulated_gpu.py). Test modules import from here, never from each other or from conftest."""
