"""``rxllm serve``: a validating OpenAI-compatible streaming gateway (aiohttp.web over the engine).

``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``, ``GET /healthz``.
Each request is one :func:`~engine.assembly.stream_with_chunking` run: only validated
chunks reach the client; a failed check ends the answer with ``finish_reason:
"content_filter"`` and an ``rxllm`` extension object; a client that disconnects, or the
request's deadline, cancels the upstream generation at once.

Several cores: ``gunicorn 'engine.gateway:create_app()' -k aiohttp.GunicornWebWorker -w N``
(the configuration from ``$RXLLM_SERVE_CONFIG`` and the environment).

Modules: ``config`` (the configuration and its checks), ``wire`` (OpenAI's request and
answer formats), ``upstream`` (upstream failures as answers), ``app`` (the handlers).
"""

from engine.gateway.app import GATEWAY, Gateway, create_app
from engine.gateway.config import ConfigError, GatewayConfig, load_config

__all__ = ["GATEWAY", "ConfigError", "Gateway", "GatewayConfig", "create_app", "load_config"]
