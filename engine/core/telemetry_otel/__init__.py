"""The OpenTelemetry side of :mod:`engine.core.telemetry`: spans and metrics of runs and generations.

Imported only when telemetry is switched on. Attribute names follow the OpenTelemetry
GenAI semantic conventions of semantic conventions release 1.37.0 (``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.operation.name``, ``gen_ai.usage.input_tokens`` /
``output_tokens``, ``gen_ai.response.finish_reasons``, ``gen_ai.input.messages`` /
``gen_ai.output.messages`` for opt-in content); what the conventions do not cover is named
under ``rxllm.``.

Spans: ``rxllm.run {model}`` per run (current while the generation starts and inside every
check, so a judge's own request is its child), ``chat {model}`` per generation (written
from its :class:`~engine.core.generation.GenerationInfo` when it ends, with its real start and
end times). Metrics: see :data:`METRIC_NAMES`.

One module per concept: :mod:`.instruments` (the tracer, the meters and their names,
taken from the global providers by :func:`configure`), :mod:`.runs` (the span of a run and
of a session call, and the observer of a run's events), :mod:`.generations` (the span and
metrics of one generation, written when it ends). This package is what
:mod:`engine.core.telemetry` calls.
"""

from engine.core.telemetry_otel.generations import generation_ended, generation_started
from engine.core.telemetry_otel.instruments import METRIC_NAMES, SEMCONV_VERSION, configure
from engine.core.telemetry_otel.runs import call_scope, run_scope

__all__ = [
    "METRIC_NAMES",
    "SEMCONV_VERSION",
    "call_scope",
    "configure",
    "generation_ended",
    "generation_started",
    "run_scope",
]
