"""The event loop the ``rxllm`` command runs on: uvloop when it is installed (``rxllm[speed]``).

Only the command chooses a loop, and only for the loop it starts itself (a loop factory for
``asyncio.Runner``): the library never installs an event-loop policy, so a program that
imports ``engine`` keeps whatever loop it runs.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable

__all__ = ["event_loop_factory"]


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``uvloop.new_event_loop`` if uvloop can be imported, else None (asyncio's default loop)."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
