"""Running the service: `serve` (all in one), `api` and `worker` alone."""

from __future__ import annotations

from typing import Annotated

import typer

from thumbify_cli.common import DataOpt, HostOpt, PortOpt, apply_options, load_settings
from thumbify_cli.stop_signals import StopSignals


def _api_server(settings):
    """The API as a uvicorn server; the app is built (from THUMBIFY_* variables) when it starts. Logging is ours
    (thumbify/logs.py), configured here for what this process logs before the app is built: uvicorn's own
    configuration and access log are off."""
    import uvicorn

    from thumbify import logs

    logs.configure_from(settings, "api")
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    return uvicorn.Server(config)


def _run_api(settings) -> None:
    _api_server(settings).run()


def serve(
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Worker processes \\[env THUMBIFY_WORKERS; default 1]")
    ] = None,
    host: HostOpt = None,
    port: PortOpt = None,
    data_dir: DataOpt = None,
) -> None:
    """All in one: an embedded Redis (unless THUMBIFY_REDIS_URL is set), N workers and the API, each restarted if it
    dies; the data folder is locked against a second `serve`."""
    signals = StopSignals().install()
    if data_dir is not None:
        data_dir = data_dir.resolve()
    apply_options(workers=workers, host=host, port=port, data_dir=data_dir)
    settings = load_settings()
    from api.auth import refuse_open_bind
    from thumbify.keys import KeyRing
    from thumbify.presets import Presets
    from thumbify_cli.supervise import serve as serve_all

    refuse_open_bind(settings, KeyRing.for_settings(settings))
    Presets.for_settings(settings)  # a bad presets file stops here, before Redis and the workers start
    code = serve_all(settings, _api_server(settings), signals)
    if code:
        raise typer.Exit(code)


def api(host: HostOpt = None, port: PortOpt = None, data_dir: DataOpt = None) -> None:
    """The API alone (THUMBIFY_REDIS_URL must point at Redis)."""
    apply_options(host=host, port=port, data_dir=data_dir)
    _run_api(load_settings())


def worker(data_dir: DataOpt = None) -> None:
    """One worker process (THUMBIFY_REDIS_URL must point at Redis)."""
    apply_options(data_dir=data_dir)
    from gpu_worker.__main__ import main

    main()
