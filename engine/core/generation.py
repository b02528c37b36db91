"""``GenerationInfo``: the record of one generation (model, timings, counts, usage).

A value of its own, below the thunk that fills it in, so that telemetry (which the
thunk calls when a generation starts and ends) can read it without importing the thunk.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

__all__ = ["GenerationInfo"]


@attrs.define
class GenerationInfo:
    """What happened during one generation; filled in by the thunk and the backend as it runs.

    Times are ``time.perf_counter()`` readings, so differences are latencies.
    """

    model: str | None = None
    provider: str | None = None
    started_at: float = attrs.field(factory=time.perf_counter)
    first_delta_at: float | None = None
    """When the thunk received its first delta (time to first token = this - started_at)."""
    finished_at: float | None = None
    """When the thunk became computed (completed, failed or cancelled)."""
    cancel_requested_at: float | None = None
    """When ``cancel_generation()`` was called on an unfinished thunk."""
    cancelled_at: float | None = None
    """When the backend's producer saw the cancellation (set by the backend)."""
    connection_closed_at: float | None = None
    """When an HTTP backend closed the connection to the server (set by the backend)."""
    deltas_received: int = 0
    deltas_sent: int = 0
    """Deltas the backend's producer handed on (set by the backend)."""
    done_reason: str | None = None
    usage: dict[str, int] = attrs.field(factory=dict)
    extra: dict[str, Any] = attrs.field(factory=dict)

    @property
    def cancelled(self) -> bool:
        """True if the generation was cancelled before it finished."""
        return self.cancel_requested_at is not None
