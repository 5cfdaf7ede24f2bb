"""The data plane: peer listener, peer links and heartbeats, import listeners, policies."""

from .plane import DataPlane

__all__ = ["DataPlane"]
