"""The machinery of :func:`operators.validate.validate` (the operator and its rules live there).

* ``run.py``: :class:`~operators.validation.run.ValidationRun`, one subscription of
  ``validate``: it starts each requirement's checks on every chunk, collects their answers,
  emits the verdicts in order, and ends the run on a failure or an error;
* ``own_chunking.py``: :class:`~operators.validation.own_chunking.OwnChunkingRun`, the
  requirements that cut the output themselves: feeding them the text, judging their
  pieces, and carrying their chunkers' state across attempts;
* ``state.py``: what a run keeps per chunk (``PendingChunk``) and per requirement
  (``Checker``, ``OwnChunking``);
* ``errors.py``: the errors a check's return value raises.
"""
