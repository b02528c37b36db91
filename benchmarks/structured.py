"""Structured output checked while it streams: early stop at a bad item, and the CPU cost.

Two measures on one document, ``{"products": [...]}`` with 200 items whose item 17 has a
currency a check refuses, streamed in 4-character deltas by a scripted backend:

1. **Early stop**, at 20 ms per delta: ``stream_with_chunking(format=ProductList,
   chunking="json", requirements=[FieldCheck("$.products[*].currency", ...)])`` against
   "parse and validate at the end" (the whole answer generated, then parsed and every
   item checked: what a library that validates the finished object does). Measured: the
   deltas the backend produced after item 17's currency closed (target: none beyond the
   delta in flight) and the seconds from the start to the verdict.
2. **CPU per delta** of the whole pipeline, no pacing, the document without the bad item:
   JSON chunking with the format (records, partial objects, the parsed result) against
   sentence chunking of the same text, three no-op requirements each (target: at most 1.5 times).
   The sides alternate in one process; per repeat pair, JSON time / sentence time.

Run: ``python benchmarks/structured.py [--quick] [--out PATH]``
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import pydantic
from _harness import alternate, parse_args, run_async, split_deltas, summarize, write_result
from _ours import NoOpRequirement

from backends import ScriptedBackend
from engine import FieldCheck, SimpleContext, stream_with_chunking
from operators import RawDeltas

COLUMNS = [
    ("measure", "measure"),
    ("ours", "JSON chunking, checked per item"),
    ("reference", "reference"),
    ("ratio", "ours / reference"),
    ("target", "target"),
]
BAD_ITEM = 17


class Product(pydantic.BaseModel):
    name: str
    price: float
    currency: str


class ProductList(pydantic.BaseModel):
    products: list[Product]


def document(n_items: int, *, bad: int | None) -> str:
    items = [
        {"name": f"product {i}", "price": round(3.5 + i, 2), "currency": "GBP" if i == bad else "EUR"}
        for i in range(n_items)
    ]
    return json.dumps({"products": items})


def currency_check() -> FieldCheck:
    return FieldCheck("$.products[*].currency", lambda c: c in {"EUR", "USD"}, "currency is EUR or USD")


async def early_stop(text: str, delay: float) -> dict[str, float]:
    """Ours: the deltas produced after the bad currency closed, and the seconds to the verdict."""
    closes = text.index('"GBP"') + len('"GBP"')
    start = time.perf_counter()
    backend = ScriptedBackend(split_deltas(text, 4), delay=delay)
    result = await stream_with_chunking(
        "list", backend, SimpleContext(), format=ProductList, chunking="json", requirements=[currency_check()]
    )
    async for _ in result.events():
        pass
    if result.completed or result.partial is None or len(result.partial.products) != BAD_ITEM:
        raise RuntimeError("the bad item did not stop the run where expected")
    received = len(result.mot.text)
    return {"after": max(0, -(-(received - closes) // 4)), "seconds": time.perf_counter() - start}


async def parse_at_end(text: str, delay: float) -> dict[str, float]:
    """The reference: generate everything, then parse and check every item."""
    closes = text.index('"GBP"') + len('"GBP"')
    start = time.perf_counter()
    backend = ScriptedBackend(split_deltas(text, 4), delay=delay)
    result = await stream_with_chunking("list", backend, SimpleContext(), chunking=RawDeltas())
    async for _ in result.events():
        pass
    parsed = ProductList.model_validate_json(result.full_text)
    if all(p.currency in {"EUR", "USD"} for p in parsed.products):
        raise RuntimeError("the reference missed the bad item")
    return {"after": -(-(len(result.full_text) - closes) // 4), "seconds": time.perf_counter() - start}


async def cpu_per_delta(text: str, side: str) -> float:
    """Process CPU seconds per delta of one run of the whole pipeline on *side*."""
    deltas = split_deltas(text, 4)
    requirements = [NoOpRequirement() for _ in range(3)]
    start = time.process_time()
    if side == "json":
        result = await stream_with_chunking(
            "list",
            ScriptedBackend(deltas),
            SimpleContext(),
            format=ProductList,
            chunking="json",
            requirements=requirements,
        )
    else:
        result = await stream_with_chunking(
            "list", ScriptedBackend(deltas), SimpleContext(), chunking="sentence", requirements=requirements
        )
    async for _ in result.events():
        pass
    if not result.completed:
        raise RuntimeError(f"the {side} run did not complete")
    return (time.process_time() - start) / len(deltas)


def main(args: argparse.Namespace) -> None:
    n_items = 40 if args.quick else 200
    delay = 0.001 if args.quick else 0.02
    stop_repeats = 1 if args.quick else 3
    cpu_repeats = 3 if args.quick else 15

    async def run() -> list[dict[str, Any]]:
        bad = document(n_items, bad=BAD_ITEM)
        ours = [await early_stop(bad, delay) for _ in range(stop_repeats)]
        reference = [await parse_at_end(bad, delay) for _ in range(stop_repeats)]
        good = document(n_items, bad=None)
        cpu: dict[str, list[float]] = {"json": [], "sentence": []}
        for _, side in alternate(cpu_repeats, ["json", "sentence"]):
            cpu[side].append(await cpu_per_delta(good, side))
        pairs = [j / s for j, s in zip(cpu["json"], cpu["sentence"], strict=True)]
        return [
            {
                "measure": f"deltas produced after item {BAD_ITEM}'s currency closed",
                "ours": summarize([o["after"] for o in ours]),
                "reference": summarize([r["after"] for r in reference]),
                "ratio": summarize([o["after"] / r["after"] for o, r in zip(ours, reference, strict=True)]),
                "target": "≤ 1 (the delta in flight)",
            },
            {
                "measure": "seconds from the start to the verdict",
                "ours": summarize([o["seconds"] for o in ours]),
                "reference": summarize([r["seconds"] for r in reference]),
                "ratio": summarize(
                    [o["seconds"] / r["seconds"] for o, r in zip(ours, reference, strict=True)]
                ),
                "target": "",
            },
            {
                "measure": "CPU µs per delta, JSON chunking (ours) vs sentence chunking (reference)",
                "ours": summarize([1e6 * v for v in cpu["json"]]),
                "reference": summarize([1e6 * v for v in cpu["sentence"]]),
                "ratio": summarize(pairs),
                "target": "≤ 1.5",
            },
        ]

    rows = run_async(run)
    write_result(
        "structured",
        title="Structured output: stop at the first bad item, and the CPU cost of JSON chunking",
        columns=COLUMNS,
        rows=rows,
        params={
            "items": n_items,
            "bad_item": BAD_ITEM,
            "delta_chars": 4,
            "delay_s": delay,
            "stop_repeats": stop_repeats,
            "cpu_repeats": cpu_repeats,
        },
        notes=[
            f"{n_items} items, item {BAD_ITEM}'s currency refused by a FieldCheck; 4-character deltas, "
            f"{delay * 1000:g} ms apart for the early-stop rows. Reference for those rows: the whole answer "
            "generated, then parsed and every item checked.",
            "CPU rows: the same document without the bad item, no pacing, three no-op requirements; "
            "JSON chunking with format= (records, partial objects, parsed result) against sentence chunking "
            "of the same text; ratio per repeat pair.",
        ],
        quick=args.quick,
        out=args.out,
    )


if __name__ == "__main__":
    main(parse_args(__doc__ or ""))
