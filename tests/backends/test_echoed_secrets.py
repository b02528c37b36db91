"""Servers that echo the credentials they received, and keys too short to redact as substrings.

A hostile (or merely chatty) server may write back the headers it got anywhere it puts text:
an error body, a plain-text 500, the reason phrase, an error frame or a malformed line inside
a stream, a Content-Type or a Location header. Whatever form the client sent (the raw key,
the ``Authorization: Basic`` base64 of ``user:password``, URL-encoded spellings) must be
redacted from the exception, the ``ErrorEvent`` and the command line's output. A secret of 8
characters or more is redacted wherever it appears; a shorter one only as a whole token, so
that ``api_key="x"`` never garbles the server's words.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from backends import BackendError, OllamaBackend, OpenAIBackend
from backends._failures import Secrets
from backends._http import HttpBackend
from engine import ErrorEvent, ModelOption, SimpleContext, stream_with_chunking
from tests.hostile import RawRequest, RawServer, http_response, ndjson_lines

USER, PASSWORD = "alice", "p@ss:w0rd/é+long"
LONG_KEY = "sk-live-0123456789abcdef"
SHORT_KEY = "x"

ROOT = Path(__file__).resolve().parent.parent.parent
CREDENTIALS = ["ollama-url", "openai-url", "openai-key"]


def make_backend(credentials: str, root: str, **kw: Any) -> HttpBackend:
    userinfo = f"{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@"
    with_userinfo = root.replace("http://", f"http://{userinfo}")
    kw.setdefault("idle_timeout", 5.0)
    if credentials == "ollama-url":
        return OllamaBackend("m", base_url=with_userinfo, **kw)
    if credentials == "openai-url":
        return OpenAIBackend("m", base_url=with_userinfo + "/v1", **kw)
    key = SHORT_KEY if credentials == "openai-short-key" else LONG_KEY
    return OpenAIBackend("m", base_url=root + "/v1", api_key=key, **kw)


def sent_forms(request: RawRequest) -> list[str]:
    """What the client sent, read from the request the server got (not from the code under test)."""
    scheme, _, credential = request.headers["authorization"].partition(" ")
    if scheme == "Bearer":
        return [credential, quote(credential, safe=""), quote_plus(credential)]
    login, _, password = base64.b64decode(credential).decode("latin-1").partition(":")  # as aiohttp encodes
    forms = [credential, credential.rstrip("="), f"{login}:{password}", password]
    return [*forms, quote(password, safe=""), quote_plus(password), quote(f"{login}:{password}", safe="")]


def echo_of(request: RawRequest) -> str:
    """The request's headers (``Authorization`` first), each value also URL-encoded, on one line."""
    headers = sorted(request.headers.items(), key=lambda item: item[0] != "authorization")  # it first
    pairs = [f"{name}: {value} ({quote(value, safe='')})" for name, value in headers]
    return " | ".join(pairs)


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


def echoing(where: str, stream_type: str) -> Callable[[RawRequest, asyncio.StreamWriter], Any]:
    """A server answer that puts the echo of the request's headers *where*."""

    async def answer(request: RawRequest, writer: asyncio.StreamWriter) -> None:
        echo = echo_of(request)
        if where == "401 body":
            data = http_response(json.dumps({"error": echo}).encode(), status="401 Unauthorized")
        elif where == "500 text":
            data = http_response(echo.encode(), status="500 Internal Server Error", content_type="text/plain")
        elif where == "reason phrase":
            data = http_response(b"", status=f"500 {request.headers['authorization']}")
        elif where == "stream error frame":
            if stream_type == "ndjson":
                data = http_response(ndjson_lines({"error": echo}), content_type="application/x-ndjson")
            else:
                frame = b"data: " + json.dumps({"error": {"message": echo}}).encode() + b"\n\n"
                data = http_response(frame, content_type="text/event-stream")
        elif where == "malformed line":
            ctype = "application/x-ndjson" if stream_type == "ndjson" else "text/event-stream"
            prefix = b"" if stream_type == "ndjson" else b"data: "
            data = http_response(prefix + echo.encode() + b"\n\n", content_type=ctype)
        elif where == "content type":
            data = http_response(
                b"<html/>", content_type=f"text/html; echo={request.headers['authorization']}"
            )
        else:  # "location"
            location = f"http://127.0.0.1:1/{quote(request.headers['authorization'])}"
            data = http_response(b"", status="307 Temporary Redirect", headers=[("Location", location)])
        await _write(writer, data)

    return answer


PLACES = [
    "401 body",
    "500 text",
    "reason phrase",
    "stream error frame",
    "malformed line",
    "content type",
    "location",
]


def assert_no_form(shown: str, forms: list[str]) -> None:
    for form in forms:
        assert form not in shown, f"{form!r} leaked: {shown}"


@pytest.mark.asyncio
@pytest.mark.parametrize("credentials", CREDENTIALS)
@pytest.mark.parametrize("where", PLACES)
async def test_an_echoed_credential_is_redacted_from_the_error_and_its_event(
    credentials: str, where: str
) -> None:
    stream_type = "ndjson" if credentials.startswith("ollama") else "sse"
    async with RawServer(echoing(where, stream_type)) as server:
        backend = make_backend(credentials, server.root)
        async with backend:
            thunk, _ = await backend.generate_from_context(
                "Hi.", SimpleContext(), model_options={ModelOption.STREAM: True}
            )
            with pytest.raises(BackendError) as info:
                await thunk.avalue()
            result = await stream_with_chunking("Hi.", backend, SimpleContext())
            events = [event async for event in result.events()]
        forms = sent_forms(server.requests[0])
    error = info.value
    assert "***" in str(error) or where == "location", str(error)
    shown = "".join(traceback.format_exception(error)) + repr(error) + str(vars(error))
    assert_no_form(shown, forms)
    errors = [e for e in events if isinstance(e, ErrorEvent)]
    assert len(errors) == 1
    assert_no_form(repr(errors[0]), forms)


@pytest.mark.asyncio
async def test_a_short_key_is_redacted_as_a_token_and_never_inside_a_word() -> None:
    said = "Input should be 'text' or 'json_object'; x-ray, it's context; got 'x' from Bearer x"
    answer = http_response(json.dumps({"error": {"message": said}}).encode(), status="500 Server Error")
    async with RawServer(answer) as server, make_backend("openai-short-key", server.root) as backend:
        thunk, _ = await backend.generate_from_context("Hi.", SimpleContext())
        with pytest.raises(BackendError) as info:
            await thunk.avalue()
    assert server.requests[0].headers["authorization"] == "Bearer x"
    message = str(info.value)
    assert (
        "Input should be 'text' or 'json_object'; x-ray, it's context; got '***' from Bearer ***" in message
    )


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "flags", [["--base-url", "{userinfo}/v1"], ["--base-url", "{root}/v1", "--api-key", LONG_KEY]]
)
async def test_the_command_line_shows_no_echoed_credential(flags: list[str]) -> None:
    async with RawServer(echoing("401 body", "sse")) as server:
        userinfo = server.root.replace(
            "http://", f"http://{quote(USER, safe='')}:{quote(PASSWORD, safe='')}@"
        )
        args = [flag.format(userinfo=userinfo, root=server.root) for flag in flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "OPENAI_", "RXLLM_"))}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine", "stream", "Hi.", "--backend", "openai", "--model", "m", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
            cwd=ROOT,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        forms = sent_forms(server.requests[0])
    shown = out.decode() + err.decode()
    assert proc.returncode not in (0, None) and "***" in shown, shown
    assert_no_form(shown, forms)


# -- the redaction itself, property-tested ------------------------------------------------------

# "*" is the redaction mark itself: a secret made of it would "survive" as the mark.
SECRET_CHARS = st.characters(codec="utf-8", exclude_characters="*", exclude_categories=("Cs",))
WORD = re.compile(r"\w+(?:['-]\w+)*")


def client_forms(user: str, password: str, key: str) -> list[str]:
    """The spellings a client sends, derived here independently of the code under test."""
    forms = [key, quote(key, safe=""), quote_plus(key), json.dumps(key)[1:-1]]
    forms += [password, quote(password, safe=""), f"{user}:{password}"]
    with contextlib.suppress(UnicodeEncodeError):  # aiohttp sends basic auth in latin-1 (or not at all)
        forms.append(base64.b64encode(f"{user}:{password}".encode("latin-1")).decode())
    return [form for form in forms if form]


def secrets_for(user: str, password: str, key: str) -> Secrets:
    url = f"http://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:1/v1" if password else ""
    secrets = Secrets.of(url=url)
    return secrets + Secrets.of(api_key=key) if key else secrets


@given(
    user=st.text(SECRET_CHARS, min_size=1, max_size=10).filter(lambda u: ":" not in u),
    password=st.text(SECRET_CHARS, min_size=1, max_size=20),
    key=st.text(SECRET_CHARS, min_size=1, max_size=30),
    fillers=st.lists(st.text(max_size=12), min_size=1, max_size=6),
    picks=st.lists(st.integers(min_value=0), min_size=1, max_size=6),
)
def test_no_form_of_a_secret_survives_redaction(
    user: str, password: str, key: str, fillers: list[str], picks: list[int]
) -> None:
    assume(user.strip() == user and password.strip() == password and key.strip() == key)
    forms = client_forms(user, password, key)
    secrets = secrets_for(user, password, key)
    # Each form placed among random text, a space either side (so a short one stands as a token).
    text = "".join(
        f"{filler} {forms[pick % len(forms)]} " for filler, pick in zip(fillers, picks, strict=False)
    )
    shown = secrets.redact(text)
    for form in forms:
        if len(form) >= 8:
            assert form not in shown, (form, shown)
        else:
            assert f" {form} " not in shown, (form, shown)


@given(
    key=st.text(SECRET_CHARS, min_size=1, max_size=30),
    password=st.text(SECRET_CHARS, max_size=20),
    text=st.text(),
)
def test_text_without_secrets_is_unchanged(key: str, password: str, text: str) -> None:
    secrets = secrets_for("u", password, key)
    assume(not any(form in text for form in secrets.forms))
    assert secrets.redact(text) == text


@given(
    key=st.text(st.characters(categories=("L", "Nd")), min_size=1, max_size=7),
    words=st.lists(st.text(st.characters(categories=("L", "Nd")), min_size=1, max_size=10), max_size=12),
    separators=st.lists(
        st.sampled_from([" ", ", ", "'", "-", "'s ", ". ", "\n", "=", '"', "/"]), max_size=12
    ),
)
def test_a_short_secret_never_touches_a_word(key: str, words: list[str], separators: list[str]) -> None:
    text = "".join(
        word + separator for word, separator in zip(words, [*separators, *[" "] * 12], strict=False)
    )
    shown = Secrets.of(api_key=key).redact(text)
    # Every word of the text other than the key itself is kept, in order; the key as a word is gone.
    assert WORD.findall(shown) == [w for w in WORD.findall(text) if w != key]


def test_the_forms_of_url_credentials_are_what_aiohttp_sends() -> None:
    secrets = Secrets.of(url=f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:1/v1")
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode("latin-1")).decode()  # aiohttp's encoding
    assert basic in secrets.forms and PASSWORD in secrets.forms and f"{USER}:{PASSWORD}" in secrets.forms
    assert USER not in secrets.forms  # a user name alone is not a secret
