"""Image backends. Each turns (source file, spec) into renditions; the worker picks one per node and per image.

`vips` (CPU, streaming libvips), `dali` (GPU batches), `tiles` (huge images in strips through the GPU kernels). Each
render is a short list of steps over one prepared context: `context.prepare` (header, `plan` of the sizes) → the
backend's own decode and resample (`decode` holds the libvips decoding vips and tiles share) → `finishing` (per size:
resize → upright → sRGB → crop or pad → flatten → encode). `base` holds the interfaces and the shared types, and
refusal (`base.Refused`), the one way an image leaves a GPU backend for vips; `route.decide` routes each image once,
`route.RoutedBackend` puts the three behind one batch backend on GPU nodes, and `gpu_worker.backend_choice`
decides per node which the worker runs.
"""

from gpu_worker.backends.base import Backend, Rendition

__all__ = ["Backend", "Rendition"]
