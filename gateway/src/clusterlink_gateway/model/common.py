"""Field types shared by every object kind: names, ports, labels, hosts."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_LABEL = re.compile(DNS_LABEL)
HOSTNAME_PATTERN = (
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?$"
)
_HOSTNAME = re.compile(HOSTNAME_PATTERN)
_V4 = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_V6_PREFIX = r"(12[0-8]|1[01][0-9]|[1-9]?[0-9])"
CIDR_SCHEMAS = [
    {"type": "string", "format": "ipv4"},
    {"type": "string", "format": "ipv6"},
    {"type": "string", "pattern": rf"^({_V4}\.){{3}}{_V4}/(3[0-2]|[12]?[0-9])$"},
    {"type": "string", "pattern": rf"^([0-9a-f]{{1,4}}:){{7}}[0-9a-f]{{1,4}}/{_V6_PREFIX}$"},
    {"type": "string", "pattern": rf"^([0-9a-f]{{1,4}}:){{1,7}}:/{_V6_PREFIX}$"},
]
_IP_SCHEMAS = [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]

LABEL_KEY_PATTERN = (
    r"^(?=([^/]{1,253}/)?[^/]{1,63}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$"


class Strict(BaseModel):
    """Base for every API model: unknown fields are an error, never dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


_NAME_MAX = 63
_PREFIX_MAX = 253
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?")
_DNS_PART = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_RE = re.compile(rf"{_DNS_PART}(?:\.{_DNS_PART})*")

_NAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)


def _check_label_name(name: str, what: str) -> None:
    if not name:
        raise ValueError(f"{what} must be non-empty")
    if len(name) > _NAME_MAX:
        raise ValueError(f"{what} must be no more than {_NAME_MAX} characters")
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"{what} {_NAME_RULE}")


def validate_label_key(key: str) -> str:
    """Check a qualified name: ``[prefix/]name`` (prefix: DNS subdomain)."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if "/" in prefix:
            raise ValueError(f"invalid label key {key!r}: at most one '/' is allowed")
        if not prefix:
            raise ValueError(f"invalid label key {key!r}: prefix part must be non-empty")
        if len(prefix) > _PREFIX_MAX:
            raise ValueError(
                f"invalid label key {key!r}: prefix part must be no more than "
                f"{_PREFIX_MAX} characters"
            )
        if not _SUBDOMAIN_RE.fullmatch(prefix):
            raise ValueError(
                f"invalid label key {key!r}: prefix part must be a lowercase DNS subdomain"
            )
    try:
        _check_label_name(name, "name part")
    except ValueError as exc:
        raise ValueError(f"invalid label key {key!r}: {exc}") from None
    return key


def validate_label_value(value: str) -> str:
    """Check a label value: empty, or <= 63 chars of ``[A-Za-z0-9._-]``, alnum at both ends."""
    if value == "":
        return value
    if len(value) > _NAME_MAX:
        raise ValueError(
            f"invalid label value {value!r}: must be no more than {_NAME_MAX} characters"
        )
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"invalid label value {value!r}: {_NAME_RULE}")
    return value


def _check_name(name: str) -> str:
    if not _DNS_LABEL.match(name):
        raise ValueError(
            f"{name!r} is not a DNS label: use 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return name


def _check_host(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} is neither an IP address nor a valid DNS name") from None
    return host


def _check_ip(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None
    return address


LabelKey = Annotated[
    str,
    Field(json_schema_extra={"maxLength": 317, "pattern": LABEL_KEY_PATTERN}),
    AfterValidator(validate_label_key),
]
LabelValue = Annotated[
    str,
    Field(json_schema_extra={"maxLength": 63, "pattern": LABEL_VALUE_PATTERN}),
    AfterValidator(validate_label_value),
]
Name = Annotated[
    str,
    Field(
        json_schema_extra={"minLength": 1, "maxLength": 63, "pattern": DNS_LABEL},
        description="DNS label (RFC 1123): at most 63 lowercase alphanumerics or '-'",
    ),
    AfterValidator(_check_name),
]
Labels = Annotated[
    dict[LabelKey, LabelValue],
    Field(json_schema_extra={"additionalProperties": False}),
]


def _integral(value: object) -> object:
    """JSON numbers like ``443.0`` are integers too; strings and booleans are not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Port = Annotated[int, Field(ge=1, le=65535, strict=True), BeforeValidator(_integral)]
PortOrZero = Annotated[int, Field(ge=0, le=65535, strict=True), BeforeValidator(_integral)]
Host = Annotated[
    str,
    Field(
        json_schema_extra={"anyOf": [*_IP_SCHEMAS, {"type": "string", "pattern": HOSTNAME_PATTERN}]}
    ),
    AfterValidator(_check_host),
]
IPAddress = Annotated[
    str, Field(json_schema_extra={"anyOf": _IP_SCHEMAS}), AfterValidator(_check_ip)
]
