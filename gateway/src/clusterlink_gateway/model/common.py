"""Field types shared by every object kind: names, ports, labels, hosts."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_DNS_LABEL = re.compile(DNS_LABEL)
_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?)*\.?$"
)

LABEL_KEY_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$"


class Strict(BaseModel):
    """Base for every API model: unknown fields are an error, never dropped."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def check_label_key(key: str) -> str:
    """Validate a Kubernetes qualified name: optional DNS-subdomain prefix, then a name."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain of at most 253 chars")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"label key {key!r}: name must be 1-63 characters of [A-Za-z0-9._-], "
            "starting and ending with an alphanumeric character"
        )
    return key


def check_label_value(value: str) -> str:
    """Validate a Kubernetes label value (may be empty)."""
    if len(value) > 63 or not _LABEL_NAME.match(value):
        raise ValueError(
            f"label value {value!r}: must be at most 63 characters of [A-Za-z0-9._-], "
            "starting and ending with an alphanumeric character"
        )
    return value


def _check_labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_label_key(key)
        check_label_value(value)
    return labels


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
    str, Field(max_length=317, pattern=LABEL_KEY_PATTERN), AfterValidator(check_label_key)
]
LabelValue = Annotated[
    str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN), AfterValidator(check_label_value)
]
Name = Annotated[
    str,
    Field(
        json_schema_extra={"minLength": 1, "maxLength": 63, "pattern": DNS_LABEL},
        description="DNS label (RFC 1123): at most 63 lowercase alphanumerics or '-'",
    ),
    AfterValidator(_check_name),
]
Labels = Annotated[dict[LabelKey, LabelValue], AfterValidator(_check_labels)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
PortOrZero = Annotated[int, Field(ge=0, le=65535, strict=True)]
Host = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_check_host)]
IPAddress = Annotated[str, Field(min_length=2, max_length=45), AfterValidator(_check_ip)]
