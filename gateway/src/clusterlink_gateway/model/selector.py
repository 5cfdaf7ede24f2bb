"""Label selectors and the access-policy spec (Kubernetes label-selector semantics).

Selectors are validated once (Kubernetes label grammar) and compiled in ``model_post_init``
into plain frozen dataclasses (``.matcher``) so that matching -- per connection -- does no
parsing and no pydantic attribute lookups. Compiled state compares by value, so model
equality is unaffected.
Models are frozen; build a new one instead of mutating (``model_copy(update=...)`` would
skip validation and leave the compiled form stale).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationInfo,
    field_validator,
)

from .common import (
    CIDR_SCHEMAS,
    LabelKey,
    Labels,
    LabelValue,
    validate_label_key,
    validate_label_value,
)

__all__ = ["LabelKey", "LabelValue", "validate_label_key", "validate_label_value"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _check_cidr(value: str) -> str:
    """Accept an address or network (host bits allowed); keep the text as the user wrote it."""
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR {value!r}") from None
    return value


CIDR = Annotated[str, Field(json_schema_extra={"anyOf": CIDR_SCHEMAS}), AfterValidator(_check_cidr)]

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

# Compiled operator codes.
_IN, _NOT_IN, _EXISTS, _NOT_EXISTS = range(4)
_OP_CODES: dict[str, int] = {
    "In": _IN,
    "NotIn": _NOT_IN,
    "Exists": _EXISTS,
    "DoesNotExist": _NOT_EXISTS,
}


class SelectorRequirement(BaseModel):
    """One ``matchExpressions`` element."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"operator": {"enum": ["In", "NotIn"]}}},
                    "then": {"required": ["values"], "properties": {"values": {"minItems": 1}}},
                },
                {
                    "if": {"properties": {"operator": {"enum": ["Exists", "DoesNotExist"]}}},
                    "then": {"properties": {"values": {"maxItems": 0}}},
                },
            ]
        },
    )

    key: LabelKey
    operator: Operator
    values: list[LabelValue] = Field(default=[], validate_default=True)

    @field_validator("values")
    @classmethod
    def _check_values(cls, values: list[str], info: ValidationInfo) -> list[str]:
        operator = info.data.get("operator")  # absent when the operator itself was invalid
        if operator in ("In", "NotIn"):
            if not values:
                raise ValueError(f"operator {operator} requires at least one value")
        elif operator is not None and values:
            raise ValueError(f"operator {operator} takes no values")
        return values


@dataclass(frozen=True, slots=True)
class LabelMatcher:
    """Compiled, plain-Python form of a ``LabelSelector`` (cheap to evaluate)."""

    labels: tuple[tuple[str, str], ...]
    exprs: tuple[tuple[int, str, frozenset[str]], ...]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        get = attrs.get
        for key, value in self.labels:
            if get(key) != value:
                return False
        for op, key, values in self.exprs:
            actual = get(key)
            if op == _IN:
                if actual is None or actual not in values:
                    return False
            elif op == _NOT_IN:
                if actual is not None and actual in values:
                    return False
            elif op == _EXISTS:
                if actual is None:
                    return False
            elif actual is not None:  # DoesNotExist
                return False
        return True


@dataclass(frozen=True, slots=True)
class SourceMatcher(LabelMatcher):
    """Compiled ``SourceSelector``: label part plus (version, mask, network) integers."""

    networks: tuple[tuple[int, int, int], ...]

    def matches(self, attrs: Mapping[str, str], client_ip: IPAddress | None = None) -> bool:
        networks = self.networks
        if networks:
            if client_ip is None:
                return False
            if not _in_networks(client_ip, networks):
                mapped = getattr(client_ip, "ipv4_mapped", None)
                if mapped is None or not _in_networks(mapped, networks):
                    return False
        return LabelMatcher.matches(self, attrs)


def _in_networks(ip: IPAddress, networks: tuple[tuple[int, int, int], ...]) -> bool:
    version = ip.version
    value = int(ip)
    for net_version, mask, network in networks:
        if net_version == version and value & mask == network:
            return True
    return False


def _compile_labels(
    selector: LabelSelector,
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[int, str, frozenset[str]], ...]]:
    labels = tuple(selector.matchLabels.items())
    exprs = tuple(
        (_OP_CODES[r.operator], r.key, frozenset(r.values)) for r in selector.matchExpressions
    )
    return labels, exprs


class LabelSelector(BaseModel):
    """Kubernetes label selector; ``{}`` matches every attribute set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    matchLabels: Labels = {}
    matchExpressions: list[SelectorRequirement] = []

    _matcher: LabelMatcher = PrivateAttr()

    def model_post_init(self, context: object, /) -> None:
        self._matcher = LabelMatcher(*_compile_labels(self))

    @property
    def matcher(self) -> LabelMatcher:
        """The compiled matcher (use it on hot paths; pydantic private-attr reads are slow)."""
        return self.__pydantic_private__["_matcher"]  # type: ignore[index]

    def matches(self, attrs: Mapping[str, str]) -> bool:
        """True when every matchLabels pair and every requirement holds for ``attrs``."""
        return self.matcher.matches(attrs)


class SourceSelector(LabelSelector):
    """A ``from`` element: a label selector plus optional client CIDRs (any of them)."""

    clientCIDRs: list[CIDR] = []

    def model_post_init(self, context: object, /) -> None:
        networks = tuple(ipaddress.ip_network(c, strict=False) for c in self.clientCIDRs)
        self._matcher = SourceMatcher(
            *_compile_labels(self),
            tuple((n.version, int(n.netmask), int(n.network_address)) for n in networks),
        )

    @property
    def matcher(self) -> SourceMatcher:
        return self.__pydantic_private__["_matcher"]  # type: ignore[index]

    def matches(self, attrs: Mapping[str, str], client_ip: IPAddress | None = None) -> bool:
        """Label part matches and, if CIDRs are set, ``client_ip`` lies in one of them.

        Without a client IP a selector with CIDRs never matches. IPv4-mapped IPv6
        addresses are also tried as IPv4.
        """
        return self.matcher.matches(attrs, client_ip)


class PolicySpec(BaseModel):
    """Access-policy spec. JSON uses ``from``; Python uses ``from_``."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, serialize_by_alias=True
    )

    action: Literal["allow", "deny"]
    privileged: StrictBool = False
    from_: list[SourceSelector] = Field(alias="from", min_length=1)
    to: list[LabelSelector] = Field(min_length=1)
