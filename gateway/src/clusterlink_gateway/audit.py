"""The per-connection audit line: one log record per relayed connection, on each gateway.

Its level is ``log.audit`` in gateway.yaml: ``info`` (the default: written at the default
``log.level``), ``debug`` (written only when ``log.level`` is ``debug``) or ``off``. Callers
ask ``enabled()`` first, so that a line that is not written costs no record either (at 2,000
connections a second each gateway writes ~2,000 lines of ~400 bytes).
"""

from __future__ import annotations

import logging
from typing import Any, Literal

AuditLevel = Literal["info", "debug", "off"]
LEVELS: dict[str, int | None] = {"info": logging.INFO, "debug": logging.DEBUG, "off": None}

logger = logging.getLogger("clusterlink.audit")
_level: int | None = logging.INFO


def configure(setting: str) -> None:
    """Apply ``log.audit`` (see the module docstring); ValueError for an unknown setting."""
    global _level
    if setting not in LEVELS:
        raise ValueError(f"log.audit: {setting!r} is not one of {', '.join(LEVELS)}")
    _level = LEVELS[setting]


def enabled() -> bool:
    """Whether an audit line written now would reach the log."""
    return _level is not None and logger.isEnabledFor(_level)


def write(message: str, fields: dict[str, Any]) -> None:
    """Write one audit line (ask ``enabled()`` first, before building ``fields``)."""
    if _level is not None:
        logger.log(_level, message, extra=fields)
