"""Turn pydantic validation errors into messages that name the failing field."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("spec", "gateways", 0, "port")`` -> ``spec.gateways[0].port``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(body)"


def _message(err: Any) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "required field is missing"
    return msg


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    """One ``{field, message}`` per problem, in pydantic's order."""
    details = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        details.append({"field": field_path(loc), "message": _message(err)})
    return details


def format_validation_error(exc: ValidationError) -> str:
    """All problems in one line: ``spec.port: ...; name: ...``."""
    return "; ".join(f"{d['field']}: {d['message']}" for d in validation_details(exc))
