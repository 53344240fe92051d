"""The worker process: the queue consumer, batching and the image backends (vips on CPU; GPU backends later)."""
