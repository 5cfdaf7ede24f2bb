"""The four object kinds of the admin API: Peer, Export, Import and Policy.

Every object travels in one envelope ``{name, labels, spec, status}``; ``status`` is read-only
(accepted on input so that a fetched object can be sent back, and ignored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ConfigDict, Field, StrictBool, ValidationInfo, field_validator, model_validator

from .common import Host, IPAddress, Labels, Name, Port, PortOrZero, Strict
from .selector import PolicySpec
from .trust import MAX_BUNDLE_CHARS, check_ca_bundle

LB_SCHEMES = ("round-robin", "random", "static")


class Gateway(Strict):
    """One endpoint of a remote site's gateway."""

    host: Host
    port: Port = 443


CLIENT_ATTRIBUTES = ("honor", "ignore")
MAX_VIA = 8  # relays one Peer may name


class PeerTrust(Strict):
    """The peer's own trust anchors: a foreign party's CA bundle (public certificates)."""

    ca: str = Field(
        max_length=MAX_BUNDLE_CHARS,
        description=(
            "PEM bundle of the CA(s) that directly issue this peer's gateway certificates; "
            "certificates chaining to them are accepted for this peer's name only, and the "
            "fabric CA no longer is"
        ),
    )

    @field_validator("ca")
    @classmethod
    def _bundle(cls, ca: str) -> str:
        return check_ca_bundle(ca)


class PeerSpec(Strict):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        json_schema_extra={  # gateways may be empty only when dial is false
            "anyOf": [
                {"properties": {"dial": {"const": False}}, "required": ["dial"]},
                {"properties": {"gateways": {"minItems": 1}}, "required": ["gateways"]},
            ]
        },
    )

    dial: StrictBool = Field(
        default=True,
        description=(
            "false: never dial this peer; use the reverse links it opens to this gateway "
            "(an outbound-only site)"
        ),
    )
    gateways: list[Gateway] = Field(
        default_factory=list,
        max_length=64,
        validate_default=True,
        description="endpoints of the peer's gateways (at least one unless dial is false)",
    )
    client_attributes: Literal["honor", "ignore"] | None = Field(
        default=None,
        description=(
            "whether this gateway, as exporter, trusts the client address the peer asserts "
            "for its connections (clientCIDRs): honor, ignore, or null = honour only if the "
            "peer's certificate chains to the fabric CA"
        ),
    )

    trust: PeerTrust | None = Field(
        default=None,
        description=(
            "trust anchors of a foreign party's peer (omitted: the peer's certificates chain "
            "to the fabric CA)"
        ),
    )

    via: list[Name] = Field(
        default_factory=list,
        max_length=MAX_VIA,
        json_schema_extra={"uniqueItems": True},
        description=(
            "relays (Peer names) through which this peer is reached when it has no direct or "
            "reverse link; the relays see only ciphertext (the two ends run their own mTLS)"
        ),
    )

    @field_validator("via")
    @classmethod
    def _distinct_relays(cls, via: list[str]) -> list[str]:
        if len(set(via)) != len(via):
            raise ValueError("a relay is named twice")
        return via

    @field_validator("gateways")
    @classmethod
    def _endpoints_to_dial(cls, gateways: list[Gateway], info: ValidationInfo) -> list[Gateway]:
        if info.data.get("dial", True) and not gateways:
            raise ValueError("at least one endpoint is required unless dial is false")
        return gateways


class ExportSpec(Strict):
    host: Host = "127.0.0.1"
    port: Port
    allowed_peers: list[Name] = Field(default_factory=list, max_length=1024)


class ImportSource(Strict):
    peer: Name
    export: Name | None = Field(default=None, description="defaults to the import's name")


class ImportSpec(Strict):
    port: PortOrZero = Field(default=0, description="listen port; 0 = allocate from the range")
    bind: IPAddress | Literal["auto"] | None = Field(
        default=None,
        description=(
            "listen address; default from config; auto = an address of its own from "
            "imports.address_range (kept across restarts), so that port can be the service's own"
        ),
    )
    sources: list[ImportSource] = Field(min_length=1, max_length=256)
    lb_scheme: Literal["round-robin", "random", "static"] = "round-robin"


class PeerStatus(Strict):
    reachable: bool | None = Field(default=None, description="null until the first heartbeat")
    last_seen: str | None = Field(default=None, description="time of the last good heartbeat")
    labels: dict[str, str] = Field(default_factory=dict, description="learned from heartbeats")
    rtt_ms: float | None = None
    error: str | None = Field(default=None, description="why the last heartbeat failed")
    links: int = Field(
        default=0, description="usable links to the peer (with via: reverse, the links it opened)"
    )
    via: str = Field(
        default="direct",
        description="direct: this gateway dials the peer; reverse: the peer (dial: false) "
        "dials this gateway and is reached over its reverse links; otherwise the name of the "
        "relay (spec.via) whose relayed link carries it now",
    )
    reverse_links: int = Field(
        default=0, description="reverse links this gateway keeps open to the peer, at its request"
    )
    trust: list[dict[str, str]] = Field(
        default_factory=list,
        description="the anchors of spec.trust.ca: subject, fingerprint_sha256, not_after",
    )


class ExportStatus(Strict):
    error: str | None = None


class ImportStatus(Strict):
    dns_name: str | None = Field(
        default=None, description="<import>.<zone> when the gateway answers DNS (dns in config)"
    )
    address: str | None = Field(
        default=None, description="the address allocated from imports.address_range (bind: auto)"
    )
    listen: str | None = Field(default=None, description="effective listen address host:port")
    port: int | None = Field(default=None, description="effective listen port")
    listening: bool = False
    error: str | None = None
    active_connections: int = 0


class PolicyStatus(Strict):
    pass


class _Envelope(Strict):
    kind: str | None = None
    name: Name
    labels: Labels = Field(default_factory=dict)


class Peer(_Envelope):
    kind: Literal["Peer"] | None = Field(default=None, description="optional")
    spec: PeerSpec
    status: dict[str, Any] | None = Field(default=None, description="read-only; ignored")

    @model_validator(mode="after")
    def _not_its_own_relay(self) -> Peer:
        if self.name in self.spec.via:
            raise ValueError(f"spec.via: peer {self.name!r} cannot be its own relay")
        return self


class Export(_Envelope):
    kind: Literal["Export"] | None = Field(default=None, description="optional")
    spec: ExportSpec
    status: dict[str, Any] | None = Field(default=None, description="read-only; ignored")


class Import(_Envelope):
    kind: Literal["Import"] | None = Field(default=None, description="optional")
    spec: ImportSpec
    status: dict[str, Any] | None = Field(default=None, description="read-only; ignored")


class Policy(_Envelope):
    kind: Literal["Policy"] | None = Field(default=None, description="optional")
    spec: PolicySpec
    status: dict[str, Any] | None = Field(default=None, description="read-only; ignored")


@dataclass(frozen=True)
class Kind:
    """How one object kind is named in URLs, the CLI and files."""

    kind: str  # "Peer"
    plural: str  # "peers" (URL segment)
    singular: str  # "peer" (CLI)
    model: type[_Envelope]
    status_model: type[Strict]


KINDS: dict[str, Kind] = {
    k.plural: k
    for k in (
        Kind("Peer", "peers", "peer", Peer, PeerStatus),
        Kind("Export", "exports", "export", Export, ExportStatus),
        Kind("Import", "imports", "import", Import, ImportStatus),
        Kind("Policy", "policies", "policy", Policy, PolicyStatus),
    )
}
"""Kinds by URL segment, in the order they are applied at startup."""


def kind_for(word: str) -> Kind:
    """Resolve ``peer``, ``peers`` or ``Peer`` to its kind; KeyError if unknown."""
    low = word.lower()
    for k in KINDS.values():
        if low in (k.plural, k.singular, k.kind.lower()):
            return k
    raise KeyError(word)


def object_document(kind: Kind, obj: _Envelope) -> dict[str, Any]:
    """The stored form of an object: name, labels and spec, defaults filled in."""
    spec = obj.spec.model_dump(mode="json", by_alias=True)
    if isinstance(obj, Peer) and spec.get("client_attributes") is None:
        del spec["client_attributes"]  # unset means the default: stored as before it existed
    if isinstance(obj, Peer) and spec.get("trust") is None:
        spec.pop("trust", None)  # no own anchors: the fabric CA, stored as before
    if isinstance(obj, Peer) and not spec.get("via"):
        spec.pop("via", None)  # no relays: stored as before
    return {"name": obj.name, "labels": dict(obj.labels), "spec": spec}
