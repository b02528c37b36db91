"""The simulator's canned answer (``rxllm demo``, ``rxllm stream --backend scripted``, ``rxllm serve
--backend scripted``) and the cut into token-like deltas that :class:`~backends.ScriptedBackend` replays.

Here, beside the scripted backend, so that the command line and the gateway share it without
either importing the other.
"""

from __future__ import annotations

import re

__all__ = ["DEMO_ANSWER", "tokenize"]

DEMO_ANSWER = """\
A sourdough starter is a living culture of wild yeast and lactic acid bacteria, so \
keeping it healthy is mostly about a steady routine. Feed it at the same time every \
day with equal weights of flour and water, and discard most of the old starter first \
so the fresh flour is not spread too thin. Whole rye or whole wheat flour gives the \
microbes more nutrients than white flour and often revives a sluggish culture.

Temperature matters more than most people expect. Between 24 and 27 degrees Celsius \
the yeast is lively and the starter usually doubles within six hours. A cold kitchen \
slows everything down, while a very warm one makes the culture hungry and sour, so \
you may need to feed it twice a day in summer.

Learn to read the signs. A healthy starter smells pleasantly tangy, is full of \
bubbles, and has a domed top when it peaks. A layer of grey liquid on top just means \
it is hungry: pour it off and feed it. Pink or orange streaks, on the other hand, \
mean it has been contaminated and should be thrown away.

If you bake only once a week, keep the starter in the fridge and feed it weekly. \
Take it out a day before baking and give it two feeds at room temperature so it is \
strong again when you mix the dough.
"""


def tokenize(text: str) -> list[str]:
    """Cut *text* into token-like deltas (a word with its leading space, or a punctuation mark).

    Joining the deltas gives *text* back exactly.
    """
    return re.findall(r"\s*[\w'\u2019-]+|\s*[^\w\s]|\s+", text)
