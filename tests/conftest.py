"""Suite-wide guards: asyncio's own error reports fail the test that caused them.

"Task was destroyed but it is pending!" and "Task exception was never retrieved" are
logged by asyncio, not raised or warned, so ``-W error`` cannot catch them; this
handler does. (ResourceWarning is made an error by ``-W error::ResourceWarning``.)

``RXLLM_TEST_LOOP=uvloop`` runs the whole suite on uvloop (``make unit-uvloop``): the suite,
not the library, installs uvloop's policy, so every loop a test makes (pytest-asyncio's,
``asyncio.run``, the sync API's runner) is a uvloop loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import Iterator

import pytest


class _AsyncioErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


LOOP = os.environ.get("RXLLM_TEST_LOOP", "asyncio")
"""The event loop the suite runs on: ``asyncio`` (the default) or ``uvloop``."""
if LOOP == "uvloop":
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
elif LOOP != "asyncio":
    raise pytest.UsageError(f"RXLLM_TEST_LOOP must be 'asyncio' or 'uvloop', got {LOOP!r}")

_HANDLER = _AsyncioErrors()
logging.getLogger("asyncio").addHandler(_HANDLER)


@pytest.fixture(autouse=True)
def _no_asyncio_errors() -> Iterator[None]:
    _HANDLER.messages.clear()
    yield
    gc.collect()  # destroyed-pending tasks are reported when they are collected
    messages, _HANDLER.messages = list(_HANDLER.messages), []
    if messages:
        pytest.fail("asyncio reported errors during this test:\n" + "\n".join(messages), pytrace=False)
