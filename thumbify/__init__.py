"""Thumbify's shared core: settings, the job model and store, the queue, storage, the thumbnail spec and probing."""

__version__ = "0.1.0"
