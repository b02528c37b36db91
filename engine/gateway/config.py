"""The gateway's configuration: one immutable value, read from flags, a TOML file and the environment.

The TOML file's top-level keys are the long flag names of ``rxllm serve`` with ``_`` for
``-`` (``max_words = 40``, ``forbid = ["Celsius"]``); flags override the file. Everything
is checked when the gateway starts: a wrong key, type or value is a :class:`ConfigError`
that names the key (``rxllm serve`` exits 2 with it), never a failure at the first request.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from backends.registry import BACKENDS, BackendEntry, entry
from engine.checks import ForbiddenWords, MaxCharacters, MaxSentences, MaxWords, MustNotMatch
from engine.core.backend import Backend
from engine.core.continuation import StreamRetry
from engine.core.options import ModelOption
from engine.core.requirements import Requirement, as_requirements

__all__ = [
    "CLIENT_KEY_VARIABLE",
    "CONFIG_VARIABLE",
    "ConfigError",
    "GatewayConfig",
    "config_from_environment",
    "load_config",
    "read_toml",
]

CONFIG_VARIABLE = "RXLLM_SERVE_CONFIG"
"""The TOML file ``create_app()`` reads when it is given no configuration (under gunicorn)."""
CLIENT_KEY_VARIABLE = "RXLLM_SERVE_CLIENT_KEY"
"""The key clients must send (``Authorization: Bearer ...``) when ``client_key`` is not set."""

CHUNKINGS = ("sentence", "word", "paragraph")
SCRIPT_DELAY = 0.02
"""Seconds between two tokens of the scripted backend unless ``delay`` says otherwise."""


class ConfigError(ValueError):
    """A configuration key is unknown, or its value has the wrong type or is out of range.

    ``key`` is the key (the flag's name with ``_``), ``message`` the whole explanation.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def _secret_repr(value: str | None) -> str:
    return "None" if value is None else "'***'"


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """Everything one gateway process needs; build it with :func:`load_config` (which checks it).

    Upstream: ``backend``, ``model``, ``base_url``, ``api_key`` (the upstream's key),
    ``timeout`` (the upstream request's deadline), the scripted backend's ``script`` and
    ``delay``, and default generation options (``max_tokens``, ``temperature``, ``seed``,
    ``system``). Checks: ``chunking``, ``max_sentences``, ``max_words``, ``max_chars``,
    ``forbid``, ``regex``, ``retries``, ``validation_timeout``, ``requirements``
    (``"package.module:factory"``). Service: ``host``, ``port``, ``client_key`` (the
    gateway's own key), ``allow_unauthenticated``, ``request_timeout``, ``max_streams``,
    ``max_body_bytes``, ``max_messages``, ``idle_timeout``, ``workers``.
    """

    backend: str = next(iter(BACKENDS))
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=_secret_repr)
    timeout: float | None = None
    script: str | None = None
    delay: float | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    system: str | None = None
    chunking: str = "sentence"
    max_sentences: int | None = None
    max_words: int | None = None
    max_chars: int | None = None
    forbid: tuple[str, ...] = ()
    regex: tuple[str, ...] = ()
    retries: int = 0
    validation_timeout: float | None = None
    requirements: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    client_key: str | None = attrs.field(default=None, repr=_secret_repr)
    allow_unauthenticated: bool = False
    request_timeout: float | None = 600.0
    max_streams: int = 1000
    max_body_bytes: int = 1024 * 1024
    max_messages: int = 256
    idle_timeout: float = 60.0
    workers: int = 1

    @property
    def entry(self) -> BackendEntry:
        """The registry entry of :attr:`backend`."""
        return entry(self.backend)

    @property
    def model_name(self) -> str:
        """The model clients name in ``model``: the configured one (or the backend's default)."""
        return self.model or self.entry.default_model or ""

    def model_options(self) -> dict[str, Any]:
        """The default generation options (``ModelOption`` keys) the generation keys set."""
        options = {
            ModelOption.MAX_NEW_TOKENS: self.max_tokens,
            ModelOption.TEMPERATURE: self.temperature,
            ModelOption.SEED: self.seed,
            ModelOption.SYSTEM_PROMPT: self.system,
        }
        return {key: value for key, value in options.items() if value is not None}

    def create_backend(self) -> Backend:
        """A new upstream backend (HTTP backends open their connections lazily, on first use)."""
        chosen = self.entry
        arguments: dict[str, Any] = {
            key: value
            for key, value in (
                ("base_url", self.base_url),
                ("api_key", self.api_key),
                ("timeout", self.timeout),
            )
            if value is not None
        }
        if self.model_options():
            arguments["model_options"] = self.model_options()
        if chosen.accepts("deltas"):  # the simulator replays the script (as `rxllm stream` does)
            from engine.cli.demo import DEMO_ANSWER, tokenize

            text = DEMO_ANSWER
            if self.script is not None:
                with open(self.script, encoding="utf-8") as file:
                    text = file.read()
            arguments |= {
                "deltas": tokenize(text),
                "delay": SCRIPT_DELAY if self.delay is None else self.delay,
            }
        return chosen.create(self.model_name or None, **arguments)

    def requirement_factory(self) -> Callable[[], list[Requirement]]:
        """A function returning fresh requirements for one request (no state is shared between requests)."""
        custom = _load_factory(self.requirements) if self.requirements is not None else None
        config = self

        def make() -> list[Requirement]:
            reqs: list[Requirement] = []
            if config.max_sentences is not None:
                reqs.append(MaxSentences(config.max_sentences))
            if config.max_words is not None:
                reqs.append(MaxWords(config.max_words))
            if config.max_chars is not None:
                reqs.append(MaxCharacters(config.max_chars))
            if config.forbid:
                reqs.append(ForbiddenWords(config.forbid))
            reqs.extend(MustNotMatch(pattern) for pattern in config.regex)
            if custom is not None:
                reqs.extend(_call_factory(custom, config.requirements or ""))
            return reqs

        return make

    def retry(self) -> StreamRetry | None:
        """The in-stream retry ``retries`` asks for (``None`` for 0)."""
        return StreamRetry(max_attempts=self.retries + 1) if self.retries else None

    @property
    def loopback(self) -> bool:
        """Whether :attr:`host` is a loopback address (or ``localhost``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# -- reading and checking -----------------------------------------------------------------------


def _load_factory(spec: str) -> Callable[[], Any]:
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path:  # as gunicorn and uvicorn find the app: modules in the working directory
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(module_name)
    factory = getattr(module, name)
    if not callable(factory):
        raise TypeError(f"{spec} is a {type(factory).__name__}, not a callable")
    return factory  # type: ignore[no-any-return]


def _call_factory(factory: Callable[[], Any], spec: str) -> list[Requirement]:
    made = factory()
    if not isinstance(made, (list, tuple)):
        raise TypeError(f"{spec}() returned {type(made).__name__}, expected a list of Requirement objects")
    return as_requirements(list(made))


def _string(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(key, f"expected a non-empty string, got {value!r}")
    return value


def _integer(low: int, high: int | None = None) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected a whole number, got {value!r}")
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ConfigError(key, f"expected a whole number {allowed}, got {value}")
        return value

    return check


def _number(*, positive: bool) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if not (value > 0 if positive else value >= 0):
            raise ConfigError(key, f"expected a number {'> 0' if positive else '>= 0'}, got {value}")
        return float(value)

    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, f"expected true or false, got {value!r}")
    return value


def _backend(key: str, value: Any) -> str:
    name = _string(key, value).lower()
    if name not in BACKENDS:
        raise ConfigError(
            key, f"unknown backend {value!r}; the backends are {', '.join(map(repr, BACKENDS))}"
        )
    return name


def _base_url(key: str, value: Any) -> str:
    text = _string(key, value)
    if not re.match(r"https?://[^/\s]+", text):
        raise ConfigError(
            key, f"expected an http:// or https:// URL such as http://localhost:11434, got {text!r}"
        )
    return text


def _chunking(key: str, value: Any) -> str:
    if value not in CHUNKINGS:
        raise ConfigError(key, f"expected one of {', '.join(map(repr, CHUNKINGS))}, got {value!r}")
    return str(value)


def _words(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in items):
        raise ConfigError(key, f"expected a list of non-empty words, got {value!r}")
    return tuple(w.strip() for w in items)


def _patterns(key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ConfigError(key, f"expected a list of regular expressions, got {value!r}")
    for pattern in items:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(key, f"{pattern!r} is not a valid regular expression: {exc}") from None
    return tuple(items)


def _factory_spec(key: str, value: Any) -> str:
    spec = _string(key, value)
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", spec):
        raise ConfigError(key, f"expected package.module:factory, got {spec!r}")
    return spec


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "backend": _backend,
    "model": _string,
    "base_url": _base_url,
    "api_key": _string,
    "timeout": _number(positive=True),
    "script": _string,
    "delay": _number(positive=False),
    "max_tokens": _integer(1),
    "temperature": _number(positive=False),
    "seed": _integer(-(2**63)),
    "system": _string,
    "chunking": _chunking,
    "max_sentences": _integer(0),
    "max_words": _integer(0),
    "max_chars": _integer(0),
    "forbid": _words,
    "regex": _patterns,
    "retries": _integer(0),
    "validation_timeout": _number(positive=True),
    "requirements": _factory_spec,
    "host": _string,
    "port": _integer(0, 65535),
    "client_key": _string,
    "allow_unauthenticated": _boolean,
    "request_timeout": _number(positive=True),
    "max_streams": _integer(1),
    "max_body_bytes": _integer(1),
    "max_messages": _integer(1),
    "idle_timeout": _number(positive=True),
    "workers": _integer(1),
}
assert set(_CHECKS) == {field.name for field in attrs.fields(GatewayConfig)}

# Keys that go to the backend's constructor: key -> the constructor keyword that takes it.
_BACKEND_KEYWORDS = {
    "base_url": "base_url",
    "api_key": "api_key",
    "timeout": "timeout",
    "script": "deltas",
    "delay": "delay",
    "max_tokens": "model_options",
    "temperature": "model_options",
    "seed": "model_options",
    "system": "model_options",
}


def read_toml(path: str) -> dict[str, Any]:
    """The top-level table of the TOML file at *path*; ``ConfigError`` (key ``config``) if unreadable."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{path} is not valid TOML: {exc}") from None


def load_config(
    values: Mapping[str, Any] | None = None,
    *,
    file: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewayConfig:
    """A checked configuration: the TOML *file*'s keys, overridden by *values* (the flags given).

    *environ* (default ``os.environ``) supplies ``client_key`` from ``RXLLM_SERVE_CLIENT_KEY``
    and the model from ``RXLLM_MODEL`` when neither names them. Raises :class:`ConfigError`
    naming the first wrong key.
    """
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    if file is not None:
        merged.update(read_toml(file))
    merged.update({key: value for key, value in (values or {}).items() if value is not None})
    checked: dict[str, Any] = {}
    for key, value in merged.items():
        check = _CHECKS.get(key)
        if check is None:
            known = ", ".join(sorted(_CHECKS))
            raise ConfigError(key, f"unknown key; the keys are the long flag names with _ for -: {known}")
        checked[key] = check(key, value)
    if "client_key" not in checked and environ.get(CLIENT_KEY_VARIABLE):
        checked["client_key"] = environ[CLIENT_KEY_VARIABLE]
    if "model" not in checked and environ.get("RXLLM_MODEL"):
        checked["model"] = environ["RXLLM_MODEL"]
    config = GatewayConfig(**checked)
    _check_together(config, checked)
    return config


def _check_together(config: GatewayConfig, given: Mapping[str, Any]) -> None:
    """The checks no single key can make."""
    chosen = config.entry
    for key, keyword in _BACKEND_KEYWORDS.items():
        if key in given and not chosen.accepts(keyword):
            takers = [b.name for b in BACKENDS.values() if b.accepts(keyword)]
            raise ConfigError(
                key, f"does not apply to backend {chosen.name!r} (only to {' or '.join(takers)})"
            )
    if chosen.model_required and not config.model:
        raise ConfigError(
            "model",
            f"backend {chosen.name!r} needs a model: the name the server serves, e.g. {chosen.model_example}",
        )
    if config.script is not None and not os.path.isfile(config.script):
        raise ConfigError("script", f"{config.script!r}: no such file")
    if config.requirements is not None:
        try:
            factory = _load_factory(config.requirements)
            _call_factory(factory, config.requirements)  # once now, so a broken factory fails at start-up
        except Exception as exc:
            raise ConfigError("requirements", f"{config.requirements}: {type(exc).__name__}: {exc}") from None
    if not config.loopback and config.client_key is None and not config.allow_unauthenticated:
        raise ConfigError(
            "host",
            f"{config.host} is not a loopback address, and no client key is set: anyone who can reach it "
            f"could use the upstream model (and its key). Set client_key (--client-key or "
            f"${CLIENT_KEY_VARIABLE}) so clients must send it as a bearer token, or set "
            f"allow_unauthenticated = true if something in front of the gateway authenticates them",
        )


def config_from_environment(environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """The configuration ``create_app()`` uses under gunicorn: ``$RXLLM_SERVE_CONFIG`` (TOML, optional)
    and the environment. Gunicorn's bind address is not visible here, so a client key is required
    unless the file says ``allow_unauthenticated = true``."""
    environ = os.environ if environ is None else environ
    config = load_config(file=environ.get(CONFIG_VARIABLE) or None, environ=environ)
    if config.client_key is None and not config.allow_unauthenticated:
        raise ConfigError(
            "client_key",
            f"under gunicorn the gateway cannot see the address it is bound to, so it requires a client key: "
            f"set ${CLIENT_KEY_VARIABLE} (or client_key in ${CONFIG_VARIABLE}), "
            "or allow_unauthenticated = true",
        )
    return config
