"""Exporters for applications: the CLI and ``rxllm serve`` configure OpenTelemetry from the environment.

A library never sets the global providers; an application does. ``rxllm`` and ``rxllm
serve`` call :func:`configure_from_environment`, which reads:

* ``RXLLM_TRACES_CONSOLE=1``: spans printed on standard error;
* ``RXLLM_TRACES_OTLP=1``: spans pushed by OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (``pip install "rxllm[otel-otlp]"``);
* ``RXLLM_METRICS_OTLP=1``: metrics pushed the same way (the way to see every gunicorn
  worker's metrics together: each worker has its own registry);
* ``RXLLM_METRICS_PROMETHEUS=1``: metrics kept for ``GET /metrics`` (:func:`metrics_page`,
  ``pip install "rxllm[otel-prometheus]"``);
* ``OTEL_SERVICE_NAME``: the service name on everything (default ``rxllm``);

and switches emission on for what it set up (besides ``RXLLM_TRACES_ENABLED`` /
``RXLLM_METRICS_ENABLED``). Nothing of OpenTelemetry is imported when none is set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from engine.core import telemetry

__all__ = [
    "MetricsPage",
    "configure_from_environment",
    "metrics_handler",
    "metrics_page",
    "prometheus_reader",
]

logger = logging.getLogger(__name__)

METRICS_OFF = (
    "metrics are off: start with RXLLM_METRICS_ENABLED=1 RXLLM_METRICS_PROMETHEUS=1 "
    '(needs pip install "rxllm[otel-prometheus]")\n'
)

_prometheus: Any = None  # the PrometheusMetricReader that /metrics renders


@attrs.frozen
class MetricsPage:
    """The answer to ``GET /metrics``: Prometheus text (200), or how to switch metrics on (404)."""

    status: int
    body: str
    content_type: str


def prometheus_reader() -> Any:
    """A Prometheus metric reader to give your ``MeterProvider``; :func:`metrics_page` renders it.

    Raises:
        ImportError: ``opentelemetry-exporter-prometheus`` is not installed.
    """
    global _prometheus
    try:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
    except ImportError as exc:
        raise ImportError(
            f'the Prometheus exporter is not installed: pip install "rxllm[otel-prometheus]" ({exc})'
        ) from None
    if _prometheus is None:
        _prometheus = PrometheusMetricReader()
    return _prometheus


def metrics_page() -> MetricsPage:
    """The metrics in Prometheus text format, if metrics are on and a Prometheus reader is set up."""
    if _prometheus is None or not telemetry.settings().metrics:
        return MetricsPage(404, METRICS_OFF, "text/plain; charset=utf-8")
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    return MetricsPage(200, generate_latest(REGISTRY).decode(), CONTENT_TYPE_LATEST)


def metrics_handler() -> Callable[[Any], Awaitable[Any]]:
    """An aiohttp handler for ``GET /metrics`` (mount it behind the same client key as the API)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        page = metrics_page()
        response = web.Response(status=page.status, text=page.body)
        response.headers["Content-Type"] = page.content_type
        return response

    return handle


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in telemetry.TRUE_VALUES


def configure_from_environment() -> None:
    """Set the global providers and exporters the environment asks for, then switch emission on.

    For applications only (the CLI, the gateway). A missing exporter package is reported
    once (a warning: it was asked for) and the rest goes on.
    """
    console, otlp = _flag("RXLLM_TRACES_CONSOLE"), _flag("RXLLM_TRACES_OTLP")
    prometheus, metrics_otlp = _flag("RXLLM_METRICS_PROMETHEUS"), _flag("RXLLM_METRICS_OTLP")
    traces = console or otlp or _flag("RXLLM_TRACES_ENABLED")
    metrics_on = prometheus or metrics_otlp or _flag("RXLLM_METRICS_ENABLED")
    if not (traces or metrics_on):
        return
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        logger.warning(
            'telemetry was asked for but OpenTelemetry is not installed: pip install "rxllm[otel]" (%s)', exc
        )
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "rxllm"})
    if console or otlp:
        provider = TracerProvider(resource=resource)
        if console:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        if otlp:
            exporter = _optional(
                "opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter", "otel-otlp"
            )
            if exporter is not None:
                provider.add_span_processor(BatchSpanProcessor(exporter()))
        trace.set_tracer_provider(provider)
    readers: list[Any] = []
    if prometheus:
        try:
            readers.append(prometheus_reader())
        except ImportError as exc:
            logger.warning("%s", exc)
    if metrics_otlp:
        exporter = _optional(
            "opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter", "otel-otlp"
        )
        if exporter is not None:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(exporter()))
    if readers:
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    telemetry.enable(
        traces=traces,
        metrics=metrics_on,
        content=_flag("RXLLM_TRACES_CONTENT"),
        chunk_events=_flag("RXLLM_TRACES_CHUNK_EVENTS"),
    )


def _optional(module: str, name: str, extra: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        logger.warning('%s is not installed: pip install "rxllm[%s]" (%s)', name, extra, exc)
        return None
