"""One engine's benchmark worker: ``python _worker.py ADAPTER``, driven by :class:`_harness.Worker`.

Not a benchmark itself. It imports the adapter module (``_ours`` for rxllm; ``_mellea`` for
Mellea 0.7.0 and 0.8.0, the version installed in the worker's venv choosing its code paths),
then answers commands read from stdin, one JSON line each: ``{"op": NAME, "args": {...}}``
runs ``ADAPTER.OPS[NAME](**args)`` on a fresh event loop and writes ``{"result": ...}`` (or
``{"error": traceback}``) as one line. It exits when stdin closes. Nothing else is written
to stdout.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from typing import Any

from _harness import run_async


def serve(adapter_name: str) -> None:
    """Answer commands until stdin closes."""
    adapter = importlib.import_module(adapter_name)
    ops: dict[str, Any] = adapter.OPS
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            op = ops[request["op"]]
            args = request.get("args", {})
            answer: dict[str, Any] = {"result": run_async(lambda op=op, args=args: op(**args))}
        except Exception:
            answer = {"error": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: _worker.py ADAPTER_MODULE (_ours or _mellea)")
    serve(sys.argv[1])
