"""The floor of rxllm: the value types and protocols every other layer builds on.

Options, components, contexts, the asyncio/Rx bridges, the thunk, the backend
protocol, requirements and events. ``operators`` and ``backends`` import from here
and nowhere else in ``engine``; nothing here imports ``operators``, ``backends`` or
the top of ``engine`` (streaming, sessions, sampling, checks, the CLI).
"""
