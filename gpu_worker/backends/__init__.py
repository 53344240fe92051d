"""Image backends. Each turns (source file, spec) into renditions; the worker picks one per node and per image.

`vips` (CPU, streaming libvips), `dali` (GPU batches), `tiles` (huge images in strips through the GPU kernels), all
finishing with the same host steps (`finish`); `route.RoutedBackend` puts the three behind one backend on GPU nodes
and `gpu_worker.select` decides per node which the worker runs.
"""

from gpu_worker.backends.base import Backend, Rendition

__all__ = ["Backend", "Rendition"]
