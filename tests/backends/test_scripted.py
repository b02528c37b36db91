"""How ``ScriptedBackend`` answers a retry's :class:`Continuation` when it has no script for
continuations: as a model continues, from right after the text already delivered, never the
script again from its start glued to it."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from backends.scripted import ScriptedBackend
from engine.core.context import SimpleContext
from engine.core.continuation import Continuation
from engine.core.options import ModelOption

deltas = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=12)


async def _text(backend: ScriptedBackend, prefix: str) -> str:
    thunk, _ = await backend.generate_from_context(
        Continuation("x", prefix), SimpleContext(), model_options={ModelOption.STREAM: True}
    )
    return await thunk.avalue()


@settings(max_examples=60)
@given(script=deltas, data=st.data())
def test_a_continuation_replays_the_script_from_right_after_its_prefix(
    script: list[str], data: st.DataObject
) -> None:
    text = "".join(script)
    cut = data.draw(st.integers(0, len(text)))
    backend = ScriptedBackend(script)
    assert asyncio.run(_text(backend, text[:cut])) == text[cut:]
    assert backend.generations[-1].extra["continuation_prefix"] == text[:cut]


@settings(max_examples=60)
@given(script=deltas, prefix=st.text(min_size=1, max_size=8))
def test_a_prefix_the_script_does_not_begin_with_replays_the_whole_script(
    script: list[str], prefix: str
) -> None:
    text = "".join(script)
    assume(not text.startswith(prefix))
    assert asyncio.run(_text(ScriptedBackend(script), prefix)) == text


@pytest.mark.asyncio
async def test_a_script_for_continuations_still_wins() -> None:
    backend = ScriptedBackend(["One. ", "Two."], continuations=[[" Again."]])
    assert await _text(backend, "One.") == " Again."
