"""Input of the peering-grant API (both sides): durations, endpoints, the Peer label."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from ..model.objects import Gateway
from ..registry import Invalid, RegistryError

GRANT_LABEL = "clusterlink.io/grant"  # on the Peer objects a grant created (either side)
MAX_EXPIRES = 30 * 86400  # a grant lives at most 30 days


class Unreachable(RegistryError):
    status = 502


_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def integral(value: Any) -> Any:
    """A JSON number with no fraction (``18.0``) is an integer, as JSON Schema says."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def parse_duration(value: Any, field: str) -> int:
    """Seconds from an int or "90s", "15m", "24h", "7d"."""
    message = f"{field}: expected seconds or a duration like 24h, at most {MAX_EXPIRES // 86400}d"
    value = integral(value)
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        seconds = int(match[1]) * _UNIT[match[2]]
    else:
        raise Invalid(message, field=field)
    if not 1 <= seconds <= MAX_EXPIRES:
        raise Invalid(message, field=field)
    return seconds


def parse_endpoints(value: Any, field: str) -> tuple[str, ...]:
    """``[{host, port}]`` (a Peer's ``gateways`` shape) as HOST:PORT strings."""
    if not isinstance(value, list) or not 1 <= len(value) <= 16:
        raise Invalid(f"{field}: expected a list of 1 to 16 {{host, port}}", field=field)
    out = []
    for i, item in enumerate(value):
        try:
            gateway = Gateway.model_validate(item)
        except ValidationError:
            raise Invalid(f"{field}[{i}]: expected {{host, port}}", field=field) from None
        host = gateway.host
        out.append(f"[{host}]:{gateway.port}" if ":" in host else f"{host}:{gateway.port}")
    return tuple(out)


def split_endpoint(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.rpartition(":")
    return {"host": host.strip("[]"), "port": int(port)}
