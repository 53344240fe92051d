"""Image backends. Each turns (source file, spec) into renditions; the worker picks one per node and per image."""

from gpu_worker.backends.base import Backend, Rendition

__all__ = ["Backend", "Rendition"]
