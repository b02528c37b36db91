"""Ready-made requirements: the checks users reach for first.

Each is a :class:`~engine.core.requirements.Requirement` that answers twice: per chunk
while the output streams (``stream_validate``: ``"fail"`` as soon as the output can
no longer pass, so the generation is cancelled early), and once on the whole output
after a natural end (``validate``, which :class:`TextCheck` writes once: it hands the
output's text to the subclass's ``check_text(text)``)::

    from engine.checks import ForbiddenWords, MaxSentences, req

    requirements = [
        MaxSentences(3),
        ForbiddenWords(["guarantee", "risk-free"]),
        req("No chunk shouts", lambda chunk: not chunk.isupper()),
    ]

The checks count across chunks, so they give the same verdict whatever the chunking
(sentence, word, paragraph or your own). A chunk boundary counts as whitespace: the
built-in chunkers cut at whitespace and drop it, so ``"Hello."`` then ``"World."`` are
two sentences and ``"new"`` then ``"york"`` contain the phrase "new york". A custom
chunker that cuts inside words makes the streaming counts approximate; the final
``validate`` always judges the exact whole output. The engine copies requirements
(``copy.copy``) before every run, so the running counts start from zero each run;
they are kept in immutable values that are reassigned, never mutated, so a copy
never shares state with its original.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

from engine.core import arguments
from engine.core.requirements import PartialValidationResult, Requirement, ValidationResult
from operators.chunking import Chunker, JsonChunking, JsonChunkingError
from operators.json_path import parse_path

if TYPE_CHECKING:
    from engine.core.backend import Backend
    from engine.core.context import Context

__all__ = [
    "ChunkCheck",
    "FieldCheck",
    "ForbiddenWords",
    "MaxCharacters",
    "MaxSentences",
    "MaxWords",
    "MustNotMatch",
    "TextCheck",
    "count_sentences",
    "req",
]

# A sentence ends at a run of terminal punctuation, optionally followed by closing
# quotes or brackets, that is followed by whitespace (or, for a finished text, the end).
# (The same rule as operators.SentenceChunking, so the counts agree with its chunks.)
_WHITESPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?]+[\"'\u201d\u2019)]?(?=\s)")
# Shared verdicts (results are immutable): a run's events keep one object, not one a chunk.
_PASS = PartialValidationResult("pass")
_UNKNOWN = PartialValidationResult("unknown")


def _split_sentences(text: str, opened: bool = False) -> tuple[int, bool]:
    """Count the sentences of *text* that are known to be complete; return it and whether
    text of a next sentence follows them (an open sentence).

    *opened*: *text* continues an open sentence, after whitespace. That is all a later
    piece needs to know of the text before it: a sentence end found there was followed by
    whitespace within it, so no end spans the two, and a run of punctuation not counted
    there (it closed no text) is only part of the open sentence.
    """
    count = 0
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if opened or text[start : match.start()].strip():
            count += 1
            start = match.end()
            opened = False
    rest = text[start:]
    return count, opened or (bool(rest) and not rest.isspace())


def count_sentences(text: str) -> int:
    """Count the sentences in a finished *text*.

    A sentence ends at ``.``, ``!`` or ``?`` (runs such as ``?!`` or ``...`` count once;
    a closing quote or parenthesis belongs to the sentence) followed by whitespace or the end
    of the text; trailing text without terminal punctuation counts as one more sentence.
    It is a heuristic: an abbreviation such as ``e.g.`` followed by a space ends a sentence.
    """
    count, opened = _split_sentences(text)
    return count + (1 if opened else 0)


def _require_limit(name: str, limit: int) -> int:
    return arguments.whole_number(f"{name} limit", limit, minimum=0)


class TextCheck(Requirement):
    """Base of the ready-made checks: ``validate`` reads the output's text once and hands it to
    :meth:`check_text`, the one method a subclass implements for the whole output (beside
    ``stream_validate`` for the chunks)."""

    async def check_text(self, text: str) -> ValidationResult:
        """Judge the whole output *text*."""
        raise NotImplementedError(f"{type(self).__name__} must implement check_text(text)")

    async def validate(
        self,
        backend: Backend,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> ValidationResult:
        """Check the newest model output in *ctx* with :meth:`check_text`."""
        return await self.check_text(await self._output_text(ctx))


class _CountingCheck(TextCheck):
    """Shared shape of the "at most *limit* units" checks.

    They count words of their own (``chunking="word"``), whatever the stream's chunking:
    the run stops at the word that crosses the limit, not at the end of its sentence or
    paragraph.
    """

    unit: str = "unit"
    """The singular name of what is counted; ``_n`` makes the plural."""

    def __init__(self, limit: int, rule: str) -> None:
        self.limit = _require_limit(type(self).__name__, limit)
        super().__init__(rule.format(self._n(limit)), chunking="word")

    def _verdict(self, count: int) -> PartialValidationResult:
        if count > self.limit:
            # Not retryable: the delivered text already reached the limit, and a retry can
            # only add to it.
            return PartialValidationResult(
                "fail",
                reason=f"{self._n(count)} so far, more than the limit of {self.limit}",
                retryable=False,
            )
        # Below the limit says nothing yet: later chunks may still push it over.
        return PartialValidationResult("unknown", reason=f"{count} of at most {self._n(self.limit)}")

    def _final(self, count: int) -> ValidationResult:
        ok = count <= self.limit
        relation = "within" if ok else "over"
        return ValidationResult(ok, reason=f"{self._n(count)}, {relation} the limit of {self.limit}")

    def _n(self, count: int) -> str:
        return f"{count} {self.unit}" + ("" if count == 1 else "s")

    @property
    def label(self) -> str:
        """``"max 3 sentences"``."""
        return f"max {self._n(self.limit)}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.limit})"


class MaxSentences(_CountingCheck):
    """The output has at most *limit* sentences (see :func:`count_sentences`).

    Fails mid-stream as soon as sentence ``limit + 1`` begins.
    """

    unit = "sentence"

    def __init__(self, limit: int) -> None:
        super().__init__(limit, "The response must be at most {}.")
        self._complete = 0
        self._opened = False

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Count the sentences seen so far, an open (unfinished) one included."""
        # The trailing space: the chunk boundary is whitespace (see the module docstring).
        # Only the chunk is read, with whether a sentence is open before it: re-reading an
        # open sentence's text on every chunk would cost time quadratic in its length.
        complete, self._opened = _split_sentences(chunk + " ", self._opened)
        self._complete += complete
        return self._verdict(self._complete + (1 if self._opened else 0))

    async def check_text(self, text: str) -> ValidationResult:
        """Count the sentences of the whole output."""
        return self._final(count_sentences(text))


class MaxWords(_CountingCheck):
    """The output has at most *limit* words (runs of non-whitespace characters).

    Fails mid-stream as soon as word ``limit + 1`` begins.
    """

    unit = "word"

    def __init__(self, limit: int) -> None:
        super().__init__(limit, "The response must be at most {}.")
        self._count = 0

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Count the words seen so far (a chunk boundary separates words)."""
        self._count += len(chunk.split())
        return self._verdict(self._count)

    async def check_text(self, text: str) -> ValidationResult:
        """Count the words of the whole output."""
        return self._final(len(text.split()))


class MaxCharacters(_CountingCheck):
    """The output has at most *limit* characters (whitespace included).

    While streaming, the whitespace a chunker dropped between chunks counts as one
    character per boundary; the final ``validate`` counts the exact output.
    """

    unit = "character"

    def __init__(self, limit: int) -> None:
        super().__init__(limit, "The response must be at most {} long.")
        self._count = 0

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Count the characters seen so far."""
        self._count += len(chunk) + (1 if self._count else 0)
        return self._verdict(self._count)

    async def check_text(self, text: str) -> ValidationResult:
        """Count the characters of the whole output."""
        return self._final(len(text))


class ForbiddenWords(TextCheck):
    """The output uses none of *words*: whole words (or phrases), case-insensitive.

    ``ForbiddenWords(["cat"])`` fails on "Cat" and "CAT" but not on "category" or
    "concat". A phrase that spans two chunks is found too. Chunks are assumed to end on
    word boundaries (the built-in chunkers do); a custom chunker that splits inside a
    word may see a false match on the word's first part during streaming.
    """

    def __init__(self, words: Iterable[str]) -> None:
        if isinstance(words, str):
            raise TypeError(
                f"ForbiddenWords takes a list of words, not one string; write ForbiddenWords([{words!r}])"
            )
        if isinstance(words, (bytes, Mapping)) or not isinstance(words, Iterable):
            raise TypeError(f"ForbiddenWords words must be a list of str; got {arguments.shown(words)}")
        words = list(words)
        for word in words:
            arguments.text("ForbiddenWords words (each word)", word)
        cleaned = tuple(w.strip() for w in words)
        if not cleaned or not all(cleaned):
            raise ValueError(
                f"ForbiddenWords words must hold at least one non-empty word; got {list(cleaned)!r}"
            )
        super().__init__("The response must not use these words: " + ", ".join(cleaned) + ".")
        self.words = cleaned
        # Longest first, so "new york" wins over "new"; whitespace in a phrase matches any whitespace.
        alternatives = (
            r"\s+".join(map(re.escape, w.split())) for w in sorted(cleaned, key=len, reverse=True)
        )
        self._pattern = re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE)
        # Enough of the previous text to find a phrase that straddles a chunk boundary.
        self._keep = max(len(w) for w in cleaned) + 1
        self._tail = ""

    def _find(self, text: str, start: int = 0) -> str | None:
        match = self._pattern.search(text, start)
        return None if match is None else match.group(0)

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Fail on the first forbidden word in the chunk (or straddling the previous one)."""
        # The previous text's end, then a space for the boundary (see the module docstring).
        text = self._tail + " " + chunk if self._tail else chunk
        seen = len(text) - len(chunk)
        found = None
        for match in self._pattern.finditer(text):
            if match.end() > seen:  # involves the new chunk
                found = match.group(0)
                break
        # Whitespace collapsed, so the kept tail always holds enough words for a phrase.
        self._tail = _WHITESPACE.sub(" ", text[-4 * self._keep :])[-self._keep :]
        if found is not None:
            return PartialValidationResult("fail", reason=f"forbidden word {found!r}")
        return _PASS

    async def check_text(self, text: str) -> ValidationResult:
        """Search the whole output for the forbidden words."""
        found = self._find(text)
        if found is not None:
            return ValidationResult(False, reason=f"forbidden word {found!r}")
        return ValidationResult(True, reason="no forbidden words")

    @property
    def label(self) -> str:
        """``"forbidden: cat, new york"``."""
        return "forbidden: " + ", ".join(self.words)

    def __repr__(self) -> str:
        return f"ForbiddenWords({list(self.words)!r})"


class MustNotMatch(TextCheck):
    """Neither any chunk nor the whole output matches the regular expression *pattern*.

    ``pattern`` is a string (compiled with *flags*) or a compiled pattern. Each chunk
    is searched on its own while streaming, and the whole output at the end, so a match
    that spans chunks is caught by the final validation.
    """

    def __init__(
        self, pattern: str | re.Pattern[str], *, flags: int = 0, description: str | None = None
    ) -> None:
        arguments.whole_number("MustNotMatch flags", flags, minimum=0)
        arguments.text("MustNotMatch description", description, optional=True)
        if isinstance(pattern, re.Pattern):
            if flags:
                raise ValueError(
                    "MustNotMatch takes flags only with a pattern string, not a compiled pattern"
                )
            compiled = pattern
        else:
            arguments.text("MustNotMatch pattern (a regular expression: a str or re.Pattern)", pattern)
            try:
                compiled = re.compile(pattern, flags)
            except re.error as exc:
                raise ValueError(
                    f"MustNotMatch pattern {pattern!r} is not a valid regular expression: {exc}"
                ) from exc
        super().__init__(
            description or f"The response must not match the regular expression {compiled.pattern!r}."
        )
        self.pattern = compiled

    def _verdict(self, text: str) -> str | None:
        match = self.pattern.search(text)
        return None if match is None else match.group(0)

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Fail if the chunk matches."""
        found = self._verdict(chunk)
        if found is not None:
            return PartialValidationResult("fail", reason=f"{found!r} matches /{self.pattern.pattern}/")
        return _PASS

    async def check_text(self, text: str) -> ValidationResult:
        """Fail if the whole output matches."""
        found = self._verdict(text)
        if found is not None:
            return ValidationResult(False, reason=f"{found!r} matches /{self.pattern.pattern}/")
        return ValidationResult(True, reason=f"nothing matches /{self.pattern.pattern}/")

    @property
    def label(self) -> str:
        """``"must not match /\\d/"``."""
        return f"must not match /{self.pattern.pattern}/"

    def __repr__(self) -> str:
        return f"MustNotMatch({self.pattern.pattern!r})"


CheckOutcome: TypeAlias = bool | str | PartialValidationResult | None
"""What a :func:`req` function returns: ``True`` (pass), ``False`` (fail), ``None``
(no opinion: unknown), a verdict string, or a :class:`PartialValidationResult`."""

CheckFn: TypeAlias = Callable[[str], CheckOutcome | Awaitable[CheckOutcome]]
"""A plain or async function of the chunk text, for :func:`req`."""


def _fn_name(fn: Callable[..., Any]) -> str:
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def _as_partial(outcome: object, fn: Callable[..., Any]) -> PartialValidationResult:
    if isinstance(outcome, PartialValidationResult):
        return outcome
    if outcome is None:
        return _UNKNOWN
    if isinstance(outcome, bool):
        if outcome:
            return _PASS
        return PartialValidationResult("fail", reason=f"{_fn_name(fn)} returned False")
    if outcome in ("pass", "fail", "unknown"):
        if outcome == "fail":
            return PartialValidationResult("fail")
        return _PASS if outcome == "pass" else _UNKNOWN
    name = _fn_name(fn)
    raise TypeError(
        f"the check function {name} returned {outcome!r}; return True (pass), False (fail), "
        "None (no opinion), 'pass'/'fail'/'unknown', or a PartialValidationResult"
    )


class ChunkCheck(TextCheck):
    """A requirement made from a plain or async function of the chunk; see :func:`req`."""

    def __init__(self, description: str, fn: CheckFn, *, check_whole_output: bool = True) -> None:
        arguments.text("req() description", description)
        if not callable(fn):
            raise TypeError(
                f"req() fn (its second argument) must be a function of the chunk; got {arguments.shown(fn)}"
            )
        arguments.flag("req() check_whole_output", check_whole_output)
        super().__init__(description)
        self.fn = fn
        self.check_whole_output = check_whole_output
        self._chunks_checked = 0

    async def _call(self, text: str) -> PartialValidationResult:
        outcome = self.fn(text)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        return _as_partial(outcome, self.fn)

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Apply the function to the chunk."""
        self._chunks_checked += 1
        return await self._call(chunk)

    async def check_text(self, text: str) -> ValidationResult:
        """Apply the function to the whole output ("unknown" counts as a pass).

        With ``check_whole_output=False``, a run whose every chunk was checked passes
        without calling the function again (for checks that only make sense per chunk,
        such as "no sentence longer than 40 words").
        """
        if not self.check_whole_output and self._chunks_checked:
            return ValidationResult(True, reason=f"all {self._chunks_checked} chunks passed")
        partial = await self._call(text)
        return ValidationResult(not partial.failed, reason=partial.reason, score=partial.score)

    def __repr__(self) -> str:
        return f"req({self.description!r}, {_fn_name(self.fn)})"


def req(description: str, fn: CheckFn, *, check_whole_output: bool = True) -> ChunkCheck:
    """Turn a plain or async function of the chunk into a requirement.

    *fn* takes the chunk text and returns ``True`` (pass), ``False`` (fail: the stream
    stops), ``None`` (no opinion yet), a verdict string or a
    :class:`~engine.core.requirements.PartialValidationResult`; it may be ``async``. The
    final ``validate()`` applies *fn* to the whole output, unless
    ``check_whole_output=False`` (then every chunk having passed is enough).
    *description* is what the model is told (``format_for_llm``).

    >>> no_todo = req("No TODO markers", lambda chunk: "TODO" not in chunk)
    """
    return ChunkCheck(description, fn, check_whole_output=check_whole_output)


FieldFn: TypeAlias = Callable[[Any], "bool | str | PartialValidationResult | Awaitable[Any]"]
"""A check of one JSON value: ``True`` passes, ``False`` fails, a ``str`` fails with that reason,
or a :class:`~engine.core.requirements.PartialValidationResult`; it may be ``async``."""


class FieldCheck(Requirement):
    """A check on the JSON values at *path*, run as each value closes while the output streams.

    *path* is a small JSONPath (``$``, ``.name``, ``["key"]``, ``[n]``, ``[*]``, ``.*``;
    see :mod:`operators.json_path`) into the user's type, e.g. ``"$.products[*].price"``;
    in a run with ``format=`` whose schema the server gets wrapped (a list type is sent
    as ``{"result": [...]}``) it still addresses the user's value. *check* receives the
    parsed value and returns ``True`` (pass), ``False`` (fail), a ``str`` (fail, with that
    reason) or a :class:`~engine.core.requirements.PartialValidationResult`; it may be
    ``async``. *description* is what the model is told (default: the path and the
    check's name).

    It is a requirement with its own chunking (:class:`~operators.chunking.JsonChunking`
    at *path*): a check on ``$.products[*].currency`` runs when the currency string
    closes, before the product around it is delivered, in parallel with the other
    checks. Text outside *path* counts as judged ("unknown") once it has been read.
    Its ``validate()`` checks every value at *path* in the final output.
    """

    def __init__(self, path: str, check: FieldFn, description: str | None = None) -> None:
        parse_path(path)  # TypeError / ValueError naming the path
        if not callable(check):
            raise TypeError(
                f"FieldCheck check (its second argument) must be a function of the value at {path}; "
                f"got {arguments.shown(check)}"
            )
        arguments.text("FieldCheck description", description, optional=True)
        super().__init__(
            description or f"the value at {path} passes {getattr(check, '__name__', None) or repr(check)}",
            chunking=JsonChunking(path),
        )
        self.path = path
        self.check = check

    async def _judge(self, value: Any, where: str | None) -> PartialValidationResult:
        outcome = self.check(value)
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if isinstance(outcome, PartialValidationResult):
            return outcome
        if isinstance(outcome, bool):
            if outcome:
                return _PASS
            return PartialValidationResult("fail", reason=f"{where or self.path} failed: {self.description}")
        if isinstance(outcome, str):
            return PartialValidationResult("fail", reason=f"{where or self.path}: {outcome}")
        raise TypeError(
            f"the FieldCheck function {_fn_name(self.check)} returned {outcome!r}; return True (pass), "
            "False (fail), a reason str (fail) or a PartialValidationResult"
        )

    async def stream_validate(self, chunk: str, *, backend: Backend, ctx: Context) -> PartialValidationResult:
        """Judge the value the chunk is (its ``value``; a chunk without one is parsed)."""
        path = getattr(chunk, "path", None)
        value = getattr(chunk, "value", None) if path is not None else json.loads(chunk)
        return await self._judge(value, path)

    async def validate(
        self,
        backend: Backend,
        ctx: Context,
        *,
        format: type | None = None,
        model_options: dict[str, Any] | None = None,
    ) -> ValidationResult:
        """Judge every value at the path in the newest output of *ctx* (fails on the first
        that fails, or when the output is not a whole JSON document)."""
        text = await self._output_text(ctx)
        chunker = Chunker(self.chunking)
        try:
            values = chunker.feed(text) + chunker.flush()
        except JsonChunkingError as exc:
            return ValidationResult(False, reason=str(exc))
        for value in values:
            verdict = await self._judge(value.value, value.path)
            if verdict.failed:
                return ValidationResult(False, reason=verdict.reason, score=verdict.score)
        return ValidationResult(True, reason=f"{len(values)} values at {self.path} passed")

    def __repr__(self) -> str:
        return f"FieldCheck({self.path!r}, {_fn_name(self.check)})"
