"""`python -m gpu_worker`: one worker process, configured from THUMBIFY_* variables."""

from __future__ import annotations

import asyncio
import signal

from gpu_worker.memory import limit_malloc_arenas

_received: list[int] = []


def _exit_now(signum: int, frame: object) -> None:
    _received.append(signum)  # an exception raised while a finalizer runs is dropped: `run` looks here too
    raise SystemExit(128 + signum)


def main() -> None:
    # Until the event loop takes them over, SIGTERM and SIGINT end the worker at once: nothing is read yet, so
    # nothing needs handing back (and an exit, not a traceback).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_now)
    limit_malloc_arenas()
    from prometheus_client import start_http_server

    from gpu_worker.backend_choice import select_backend
    from gpu_worker.worker import Worker
    from thumbify import logs, tracing
    from thumbify.settings import Settings

    settings = Settings()
    logs.configure_from(settings, "worker")
    tracing.setup("worker")
    if not settings.redis_url:
        raise SystemExit("THUMBIFY_REDIS_URL is not set: `thumbify serve` sets it for its workers")
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.host)
    worker = Worker(settings, select_backend(settings))

    async def run() -> None:
        loop = asyncio.get_running_loop()
        # SIGTERM/SIGINT: a graceful stop (in-flight jobs get `shutdown_grace_s`, the rest go back to the queue);
        # a second one ends the grace at once.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        if _received:  # a signal came before, and its exit was dropped
            worker.stop()
        await worker.run()

    try:
        asyncio.run(run())
    finally:
        tracing.shutdown()  # the spans still buffered go out


if __name__ == "__main__":
    main()
