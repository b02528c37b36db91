"""Token sources: the ``Backend`` protocol and its implementations."""

from engine.backend import Backend
from backends.scripted import ScriptedBackend

__all__ = ["Backend", "ScriptedBackend"]
