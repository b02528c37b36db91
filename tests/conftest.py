"""Suite-wide guards: asyncio's own error reports fail the test that caused them.

"Task was destroyed but it is pending!" and "Task exception was never retrieved" are
logged by asyncio, not raised or warned, so ``-W error`` cannot catch them; this
handler does. (ResourceWarning is made an error by ``-W error::ResourceWarning``.)
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest


class _AsyncioErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


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
