"""What the tests are built from, one module per kind of thing. Test modules import from here, never from each other
or from conftest (which keeps only fixtures and hooks).

- a running Thumbify: service.py (API + worker subprocesses, `Service`), serve.py (`thumbify serve`), cli.py (the
  command line), keys.py (API keys), uploads.py (hand-written multipart bodies), problems.py (problem+json checks)
- processes.py: processes read from /proc (descendants, render processes, tagged processes, process groups,
  resident sizes)
- faults.py: extra workers, broken storage, job records read from Redis; s3server.py: an S3 server (rclone)
- localstack.py: an S3 server that checks presigned URLs and POST policies (LocalStack); direct.py: direct uploads
  as a client sends them (POST form, PUT, parts) to a Thumbify on it with API keys
- images: images.py (generated test images), corpus.py (a PngSuite-like corpus), mutate.py (seeded mutations)
- rendering: renditions.py (render as the worker does, judge the pixels), backends.py (the backends this machine
  has), dali.py (the DALI backend, watched), kernel_reference.py (a plain float64 resampler)
- cuda_emulator.py, emulated_gpu.py: the CUDA kernels run on the CPU
"""
