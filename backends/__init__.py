"""Token sources: the ``Backend`` protocol and its implementations."""

import logging

from backends.errors import (
    AuthenticationError,
    BackendError,
    BackendProtocolError,
    BackendStatusError,
    BackendTimeoutError,
    BackendUnreachableError,
    BadRequestError,
    ConnectTimeoutError,
    IdleTimeoutError,
    IncompleteStreamError,
    MalformedStreamError,
    ModelNotFoundError,
    ProtocolError,
    RateLimitError,
    RedirectError,
    RequestTimeoutError,
    ServerError,
    UnexpectedContentTypeError,
)
from backends.ollama import OllamaBackend
from backends.openai import OpenAIBackend
from backends.scripted import ScriptedBackend
from engine.core.backend import Backend

# Library convention: records go nowhere unless the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AuthenticationError",
    "Backend",
    "BackendError",
    "BackendProtocolError",
    "BackendStatusError",
    "BackendTimeoutError",
    "BackendUnreachableError",
    "BadRequestError",
    "ConnectTimeoutError",
    "IdleTimeoutError",
    "IncompleteStreamError",
    "MalformedStreamError",
    "ModelNotFoundError",
    "OllamaBackend",
    "OpenAIBackend",
    "ProtocolError",
    "RateLimitError",
    "RedirectError",
    "RequestTimeoutError",
    "ScriptedBackend",
    "ServerError",
    "UnexpectedContentTypeError",
]
