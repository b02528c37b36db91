"""``rxllm serve``: run the gateway (:mod:`engine.gateway`) with the configuration the flags and
``--config`` give.

One worker runs aiohttp's own server in this process; ``--workers N`` hands the same
application to gunicorn with aiohttp's worker class (never a home-made process pool).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from typing import Any, TextIO

from engine.cli.errors import EXIT_OK, EXIT_USAGE

__all__ = ["serve_command"]


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys the flags set (flags not given are absent, see the serve parser)."""
    skip = {"command", "config", "verbose"}
    return {key: value for key, value in vars(args).items() if key not in skip and value not in (None, [])}


def serve_command(args: argparse.Namespace, err: TextIO) -> int:
    """Check the configuration, then serve until interrupted; returns the exit code (2: bad configuration)."""
    from engine.gateway import ConfigError, create_app, load_config

    try:
        config = load_config(_given(args), file=getattr(args, "config", None))
        app = create_app(config)
    except (ConfigError, ValueError, TypeError, ImportError) as exc:
        print(f"rxllm serve: bad configuration: {exc}", file=err)
        return EXIT_USAGE
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("rxllm serve: %(message)s"))
    gateway_log = logging.getLogger("engine.gateway")  # the gateway's records: one line per request
    gateway_log.addHandler(handler)
    gateway_log.setLevel(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    where = f"http://{config.host}:{config.port}/v1"
    print(
        f"rxllm serve: {config.backend} · {config.model_name} on {where} "
        f"({config.workers} worker{'s' if config.workers > 1 else ''}); Ctrl-C stops",
        file=err,
        flush=True,
    )
    if config.workers > 1:
        _run_gunicorn(app, config.host, config.port, config.workers)
        return EXIT_OK
    from aiohttp import web

    loop = _uvloop_loop()
    web.run_app(app, host=config.host, port=config.port, print=None, access_log=None, loop=loop)
    return EXIT_OK


def _uvloop_loop() -> Any:
    """A uvloop event loop where uvloop is installed (the gateway uses it then), else None."""
    if importlib.util.find_spec("uvloop") is None:
        return None
    return importlib.import_module("uvloop").new_event_loop()


def _run_gunicorn(app: Any, host: str, port: int, workers: int) -> None:
    """Serve *app* with gunicorn's arbiter and aiohttp's worker class (uvloop's where installed)."""
    try:
        base_application: Any = importlib.import_module("gunicorn.app.base").BaseApplication
    except ImportError:
        print("rxllm serve: --workers needs gunicorn: pip install 'rxllm[deploy]'", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    worker = "GunicornUVLoopWebWorker" if importlib.util.find_spec("uvloop") else "GunicornWebWorker"

    class Gateway(base_application):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", f"aiohttp.worker.{worker}")

        def load(self) -> Any:
            return app

    Gateway().run()
