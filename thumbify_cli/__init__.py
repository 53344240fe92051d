"""The command-line face of Thumbify (`thumbify ...`), on top of the core, the API and the worker."""
