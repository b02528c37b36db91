"""``rxllm serve``: run the gateway (:mod:`engine.gateway`) with the configuration the flags and
``--config`` give.

One worker runs aiohttp's own server in this process, on uvloop where it is installed;
``--workers N`` hands the application to gunicorn with aiohttp's worker class (uvloop's
where installed; never a home-made process pool). Each worker sets up OpenTelemetry's
exporters from the environment (``RXLLM_METRICS_PROMETHEUS=1`` for ``GET /metrics``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Any, TextIO

from engine.cli.errors import EXIT_OK, EXIT_USAGE
from engine.cli.loop import event_loop_factory
from engine.cli.serve_log import JsonLines, log_to

__all__ = ["serve_command"]

logger = logging.getLogger(__name__)

COMMAND_ONLY = {"command", "config", "verbose", "log_format"}
"""Flags of the command that are not configuration keys (how it logs, where the file is)."""


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys the flags set (flags not given are absent, see the serve parser)."""
    return {
        key: value for key, value in vars(args).items() if key not in COMMAND_ONLY and value not in (None, [])
    }


def serve_command(args: argparse.Namespace, err: TextIO) -> int:
    """Check the configuration, then serve until interrupted; returns the exit code (2: bad configuration)."""
    from engine.gateway import ConfigError, GatewayConfig, create_app, load_config
    from engine.telemetry_export import configure_from_environment

    try:
        config = load_config(_given(args), file=getattr(args, "config", None))
        create_app(config)  # built once here, so that a configuration that cannot serve exits 2 now
    except (ConfigError, ValueError, TypeError, ImportError) as exc:
        print(f"rxllm serve: bad configuration: {exc}", file=err)
        return EXIT_USAGE
    log_format = getattr(args, "log_format", "text")
    log_to(err, log_format=log_format, verbose=getattr(args, "verbose", False))
    where = f"http://{config.host}:{config.port}/v1"
    logger.info(
        "%s · %s on %s (%d worker%s); Ctrl-C stops",
        config.backend,
        config.model_name,
        where,
        config.workers,
        "s" if config.workers > 1 else "",
    )

    def application(chosen: GatewayConfig) -> Any:
        """The application of one worker process, with its own telemetry providers."""
        configure_from_environment()
        return create_app(chosen)

    if config.workers > 1:
        _run_gunicorn(lambda: application(config), config, json_logs=log_format == "json")
        return EXIT_OK
    from aiohttp import web

    factory = event_loop_factory()  # uvloop where installed
    loop = factory() if factory is not None else None
    web.run_app(
        application(config), host=config.host, port=config.port, print=None, access_log=None, loop=loop
    )
    return EXIT_OK


def _run_gunicorn(application: Any, config: Any, *, json_logs: bool) -> None:
    """Serve with gunicorn's arbiter and aiohttp's worker class (uvloop's where installed); each
    worker builds its application (and its telemetry) after the fork."""
    try:
        base_application: Any = importlib.import_module("gunicorn.app.base").BaseApplication
    except ImportError:
        print("rxllm serve: --workers needs gunicorn: pip install 'rxllm[deploy]'", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    worker = "GunicornUVLoopWebWorker" if importlib.util.find_spec("uvloop") else "GunicornWebWorker"
    host, port = config.host, config.port

    class Gateway(base_application):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            self.cfg.set("workers", config.workers)
            self.cfg.set("worker_class", f"aiohttp.worker.{worker}")
            if json_logs:  # gunicorn's own lines (worker start, exit) as JSON objects too
                self.cfg.set("logconfig_dict", _gunicorn_json_logging())

        def load(self) -> Any:
            return application()

    Gateway().run()


def _gunicorn_json_logging() -> dict[str, Any]:
    """Gunicorn's logging (merged over its defaults): its records as JSON lines on stderr, and
    nothing on the root logger (rxllm's records have their own handler; no line twice)."""
    return {
        "formatters": {"generic": {"()": f"{JsonLines.__module__}.{JsonLines.__qualname__}"}},
        "root": {"handlers": [], "level": "WARNING"},
        "loggers": {
            "gunicorn.error": {"handlers": ["error_console"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }
