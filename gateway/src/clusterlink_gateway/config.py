"""The daemon's configuration file (``/etc/clusterlink/gateway.yaml``).

Objects (peers, exports, imports, policies) are not configured here: they live in the store and
are managed through the admin API.
"""

from __future__ import annotations

import grp
import re
import ssl
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .model.common import HOSTNAME_PATTERN, IPAddress, Labels, Name, Port, Strict
from .model.errors import format_validation_error
from .model.selector import LabelSelector
from .peering.gate import MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE

if TYPE_CHECKING:
    from .peering.tls import TLSSettings

DEFAULT_CONFIG_PATH = Path("/etc/clusterlink/gateway.yaml")


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid."""


class Revocation(Strict):
    """Revoked fabric certificates, refused on both sides of the peer port."""

    crl: Path | None = Field(
        default=None, description="PEM or DER CRL signed by a CA of the fabric bundle"
    )
    serials: list[str] = Field(default_factory=list, description="certificate serials, hex")
    fingerprints: list[str] = Field(
        default_factory=list, description="SHA-256 of certificates (DER), hex"
    )

    @model_validator(mode="after")
    def _parse(self) -> Revocation:
        from .peering.revocation import RevocationError, parse_fingerprint, parse_serial

        try:
            self.serials = [format(parse_serial(s), "x") for s in self.serials]
            self.fingerprints = [parse_fingerprint(f) for f in self.fingerprints]
        except RevocationError as exc:
            raise ValueError(str(exc)) from None
        return self


class TLSFiles(Strict):
    cert: Path = Path("/etc/clusterlink/tls/gateway.crt")
    key: Path = Path("/etc/clusterlink/tls/gateway.key")
    ca: Path = Path("/etc/clusterlink/tls/ca-bundle.pem")
    revocation: Revocation = Field(default_factory=Revocation)


class PeerListener(Strict):
    address: IPAddress = "0.0.0.0"
    port: Port = 443
    handshake_timeout: float = Field(
        default=5.0, gt=0, le=300, description="from TCP accept to a completed TLS handshake"
    )
    max_handshakes: int = Field(
        default=MAX_HANDSHAKES,
        ge=1,
        le=65536,
        description="unauthenticated connections at once; further ones are reset at accept",
    )
    max_handshakes_per_source: int = Field(
        default=MAX_HANDSHAKES_PER_SOURCE,
        ge=1,
        le=65536,
        description="unauthenticated connections at once from one IPv4 address or IPv6 /64",
    )
    max_reverse_links_per_peer: int = Field(
        default=8,
        ge=1,
        le=64,
        description="reverse links one outbound-only peer (a Peer with dial: false) may hold "
        "open to this gateway; more are refused (reason reverse-limit)",
    )
    open_fabric: bool = Field(
        default=False,
        description="admit any fabric-CA certificate with a DNS SAN, not only Peer objects",
    )

    @model_validator(mode="after")
    def _per_source_within_total(self) -> PeerListener:
        if self.max_handshakes_per_source > self.max_handshakes:
            raise ValueError(
                "max_handshakes_per_source must not exceed max_handshakes "
                f"({self.max_handshakes_per_source} > {self.max_handshakes})"
            )
        return self


class AdminTCP(Strict):
    """Optional admin listener over TLS; clients need a certificate from the admin CA."""

    address: IPAddress = "127.0.0.1"
    port: Port = 9443
    cert: Path
    key: Path
    client_ca: Path = Field(description="admin CA bundle; never the fabric CA")


class Admin(Strict):
    socket: Path = Path("/run/clusterlink/admin.sock")
    socket_mode: int = Field(default=0o660, ge=0, le=0o777)
    socket_group: str | None = "clusterlink"
    tcp: AdminTCP | None = None
    max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="a request's headers complete this long after the connection (or the "
        "previous response); else the connection is closed",
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="a request's body complete this long after its headers",
    )
    max_connections: int = Field(
        default=256, ge=1, le=65536, description="open connections per admin listener"
    )


class MetricsTLS(Strict):
    """TLS on the metrics listener; with ``client_ca``, scrapers need a certificate from it."""

    cert: Path
    key: Path
    client_ca: Path | None = Field(
        default=None, description="CA bundle of the scrapers' client certificates (optional)"
    )


class MetricsListener(Strict):
    """A read-only listener that serves ``/metrics`` of every process and the fabric page."""

    address: IPAddress = "127.0.0.1"
    port: Port = 9469
    tls: MetricsTLS | None = None
    fabric_page: bool = Field(
        default=True,
        description="serve the live fabric page (/fabric, /fabric.json) beside /metrics",
    )


class Imports(Strict):
    bind: IPAddress = Field(
        default="127.0.0.1",
        description="listen address of imports without spec.bind: loopback, so that only "
        "applications on this host reach them unless an address is named",
    )
    port_range: tuple[Port, Port] = (30000, 32767)
    address_range: IPv4Network | IPv6Network | None = Field(
        default=None,
        description="addresses for imports with spec.bind: auto, one each (e.g. 127.77.0.0/16)",
    )

    @model_validator(mode="after")
    def _range_ordered(self) -> Imports:
        if self.port_range[0] > self.port_range[1]:
            raise ValueError("port_range: first port must not exceed the second")
        return self


class DNS(Strict):
    """The import name server: ``<import>.<zone>`` on a loopback address (UDP and TCP)."""

    zone: str = Field(default="clusterlink.internal", description="DNS zone, e.g. example.internal")
    address: IPAddress = Field(default="127.0.0.1", description="a loopback address")
    port: Port = 8053
    ttl: int = Field(default=5, ge=0, le=86400, description="seconds, answers and negative")
    hosts_file: Path | None = Field(
        default=None,
        description="also write the names in hosts-file form here on every change",
    )

    @field_validator("zone")
    @classmethod
    def _zone(cls, zone: str) -> str:
        if not re.fullmatch(HOSTNAME_PATTERN, zone) or zone.strip(".") == "":
            raise ValueError(f"{zone!r} is not a DNS name (letters, digits, '-', dots)")
        return zone.rstrip(".").lower()

    @model_validator(mode="after")
    def _loopback(self) -> DNS:
        if not ip_address(self.address).is_loopback:
            raise ValueError(
                f"address: {self.address} is not a loopback address (the gateway answers its "
                "own zone to this host only; it is no open resolver)"
            )
        return self


class Heartbeat(Strict):
    interval: float = Field(default=1.0, gt=0, le=3600)
    unreachable_interval: float = Field(default=10.0, gt=0, le=3600)
    timeout: float = Field(default=3.0, gt=0, le=60)
    failures_down: int = Field(default=5, ge=1, le=100)
    successes_up: int = Field(default=3, ge=1, le=100)
    full_every: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="a reachable peer gets a full heartbeat request every this many probes"
        " (1: a request every time, as before)",
    )
    ping_every: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="between full heartbeats, an HTTP/2 PING every this many probes; the"
        " kernel's TCP keepalive view of the link otherwise",
    )


class Dataplane(Strict):
    links_per_peer: int = Field(default=2, ge=1, le=16, description="long-lived links per peer")
    connect_timeout: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description=(
            "per source: get a link (TCP connect and TLS handshake together, or a dial on demand"
            " and its backoff) within this, then the CONNECT answer within this"
        ),
    )
    handshake_timeout: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description=(
            "background link maintenance: TLS handshake once TCP connected; a waiting client"
            " gets it only from a peer that said GOAWAY that recently (waits out its restart)"
        ),
    )
    dial_timeout: float = Field(default=3.0, gt=0, le=60, description="exporter -> export target")
    drain_timeout: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="at stop: how long relayed connections may finish before they are reset",
    )
    max_connections_per_import: int = Field(
        default=0, ge=0, description="open client connections per import; 0 = no limit"
    )
    idle_timeout: float = Field(
        default=0, ge=0, description="reset a relayed connection idle this long; 0 = never"
    )


class Logging(Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
    audit: Literal["info", "debug", "off"] = Field(
        default="info",
        description="level of the per-connection audit line: info, debug (written only at "
        "log.level debug) or off",
    )

    @field_validator("audit", mode="before")
    @classmethod
    def _unquoted_off(cls, value: object) -> object:
        """YAML reads an unquoted ``off`` as false: that is ``off`` here."""
        return "off" if value is False else value


class RelayPolicy(Strict):
    """Which (source, destination) peer pairs this site relays; a deny beats an allow.
    ``from``/``to``: the access-policy selector grammar (``{matchLabels, matchExpressions}``)
    over PEER attributes (``peer.clusterlink.net/name``, ``peer.clusterlink.net/labels.<key>``);
    ``{}`` is any peer."""

    name: Name
    action: Literal["allow", "deny"]
    from_: list[LabelSelector] = Field(alias="from", min_length=1, max_length=64)
    to: list[LabelSelector] = Field(min_length=1, max_length=64)


class Relay(Strict):
    """This site as a relay for other sites' peer links (it splices ciphertext only)."""

    enabled: bool = Field(default=False, description="false: this site never splices")
    max_streams_per_source: int = Field(
        default=64, ge=1, le=65536, description="concurrent relayed streams per source peer"
    )
    policies: list[RelayPolicy] = Field(
        default_factory=list, max_length=256, description="deny by default; deny beats allow"
    )

    @field_validator("policies")
    @classmethod
    def _unique_names(cls, policies: list[RelayPolicy]) -> list[RelayPolicy]:
        seen: set[str] = set()
        for policy in policies:
            if policy.name in seen:
                raise ValueError(f"duplicate relay policy name {policy.name!r}")
            seen.add(policy.name)
        return policies


class Config(Strict):
    peer_name: Name
    labels: Labels = Field(default_factory=dict)
    listen: PeerListener = Field(default_factory=PeerListener)
    tls: TLSFiles = Field(default_factory=TLSFiles)
    admin: Admin = Field(default_factory=Admin)
    state_dir: Path = Path("/var/lib/clusterlink")
    imports: Imports = Field(default_factory=Imports)
    dns: DNS | None = Field(default=None, description="answer DNS for the imports' names")
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    dataplane: Dataplane = Field(default_factory=Dataplane)
    log: Logging = Field(default_factory=Logging)
    workers: int = Field(default=1, ge=1, le=64)
    metrics: MetricsListener | None = None
    relay: Relay = Field(default_factory=Relay)


def _metrics_port_problem(config: Config) -> str | None:
    """The metrics listener may not share the port of the peer or admin TCP listener."""
    m = config.metrics
    if m is None:
        return None
    taken = [("listen.port", config.listen.address, config.listen.port)]
    if config.admin.tcp is not None:
        taken.append(("admin.tcp.port", config.admin.tcp.address, config.admin.tcp.port))
    for key, address, port in taken:
        same = address == m.address or {address, m.address} & {"0.0.0.0", "::"}
        if port == m.port and same:
            return f"metrics.port: {m.port} on {m.address} is already {key}"
    return None


def load_config(path: Path) -> Config:
    """Read and validate a config file; ConfigError names the failing field."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a YAML mapping of settings")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {format_validation_error(exc)}") from exc
    problem = _metrics_port_problem(config)
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    return config


def tls_settings(config: Config) -> TLSSettings:
    """The fabric TLS settings: files, revocation, and the name our certificate must carry."""
    from .peering.tls import TLSSettings

    rev = config.tls.revocation
    return TLSSettings(
        config.tls.cert,
        config.tls.key,
        config.tls.ca,
        expected_name=config.peer_name,
        crl=rev.crl,
        serials=tuple(rev.serials),
        fingerprints=tuple(rev.fingerprints),
    )


def admin_tls_context(tcp: AdminTCP) -> ssl.SSLContext:
    """Server context for the admin TCP listener (client certificates from the admin CA),
    through the acceptance rule; TLSError if refused."""
    from .peering.tls import AdminTLS

    return AdminTLS.prepare(tcp.cert, tcp.key, tcp.client_ca).context


def check_runtime(config: Config, *, tls: bool = True) -> list[str]:
    """Problems that only show on this host: TLS material the acceptance rule refuses (files,
    chain, key, peer_name as a DNS SAN, validity, revocation), an unknown group. ``tls=False``:
    the caller runs the rule itself (SIGHUP stages the material it then installs)."""
    from .peering.tls import TLSError, load_state

    problems: list[str] = []
    if tls:
        try:
            load_state(tls_settings(config))
        except TLSError as exc:
            problems.append(
                f"tls: cannot load certificate, key, CA bundle or revocation list: {exc}"
            )
    if tls and config.admin.tcp is not None:
        try:
            admin_tls_context(config.admin.tcp)
        except TLSError as exc:
            problems.append(f"admin.tcp: cannot load certificate, key or client CA: {exc}")
    if tls and config.metrics is not None and config.metrics.tls is not None:
        from .telemetry.tls import server_context

        try:
            server_context(config.metrics.tls)
        except TLSError as exc:
            problems.append(f"metrics.tls: cannot load certificate, key or client CA: {exc}")
    group = config.admin.socket_group
    if group is not None:
        try:
            grp.getgrnam(group)
        except KeyError:
            problems.append(f"admin.socket_group: no such group {group!r}")
    return problems


# -- reload: what a SIGHUP applies live and what needs a restart --------------------------------

# Every setting of Config by its full dotted key: "live" (SIGHUP applies it) or "restart" (named
# in needs_restart until the next start). A unit test fails when a field has no entry here.
# ``admin.tcp`` itself: the listener appearing, disappearing. Settings announced by the issue's
# other parts are classified ahead (restart is the safe default).
RELOAD: dict[str, Literal["live", "restart"]] = {
    "peer_name": "restart",
    "labels": "live",
    "listen.address": "restart",
    "listen.port": "restart",
    "listen.handshake_timeout": "restart",
    "listen.open_fabric": "restart",
    "listen.max_handshakes": "restart",
    "listen.max_handshakes_per_source": "restart",
    "listen.max_reverse_links_per_peer": "live",
    "tls.cert": "live",  # certificate, key, CA bundle, revocation: the acceptance rule, swapped in
    "tls.key": "live",
    "tls.ca": "live",
    "tls.revocation.crl": "live",
    "tls.revocation.serials": "live",
    "tls.revocation.fingerprints": "live",
    "admin.socket": "restart",
    "admin.socket_mode": "restart",
    "admin.socket_group": "restart",
    "admin.tcp": "restart",
    "admin.tcp.address": "restart",
    "admin.tcp.port": "restart",
    "admin.tcp.cert": "live",
    "admin.tcp.key": "live",
    "admin.tcp.client_ca": "live",
    "admin.max_body_bytes": "restart",
    "admin.header_timeout": "restart",
    "admin.body_timeout": "restart",
    "admin.max_connections": "restart",
    "state_dir": "restart",
    "imports.bind": "restart",
    "imports.port_range": "restart",
    "imports.address_range": "restart",
    "dns": "restart",
    "dns.zone": "restart",
    "dns.address": "restart",
    "dns.port": "restart",
    "dns.ttl": "restart",
    "dns.hosts_file": "restart",
    "heartbeat.interval": "live",
    "heartbeat.unreachable_interval": "live",
    "heartbeat.timeout": "live",
    "heartbeat.failures_down": "live",
    "heartbeat.successes_up": "live",
    "heartbeat.full_every": "live",
    "heartbeat.ping_every": "live",
    "dataplane.links_per_peer": "restart",
    "dataplane.connect_timeout": "restart",
    "dataplane.handshake_timeout": "restart",
    "dataplane.dial_timeout": "live",
    "dataplane.drain_timeout": "live",
    "dataplane.max_connections_per_import": "live",
    "dataplane.idle_timeout": "restart",
    "log.level": "live",
    "log.format": "live",
    "log.audit": "live",
    "workers": "restart",
    "metrics": "restart",  # the metrics listener (and its TLS files) are set up at start
    "metrics.address": "restart",
    "metrics.port": "restart",
    "metrics.tls": "restart",
    "metrics.fabric_page": "restart",
    "metrics.tls.cert": "restart",
    "metrics.tls.key": "restart",
    "metrics.tls.client_ca": "restart",
    "relay": "restart",  # the relay service is built at start
    "relay.enabled": "restart",
    "relay.max_streams_per_source": "restart",
    "relay.policies": "restart",
}


def classify_key(key: str) -> Literal["live", "restart"] | None:
    """Whether a change of the dotted setting ``key`` applies live; None if unclassified."""
    return RELOAD.get(key)


def changed_keys(old: Config, new: Config) -> list[str]:
    """The dotted keys whose value differs (a section that appears or disappears is one key)."""
    out: list[str] = []

    def walk(a: object, b: object, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict) and prefix not in ("labels",):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        elif a != b:
            out.append(prefix)

    walk(old.model_dump(), new.model_dump(), "")
    return out


def reload_plan(old: Config, new: Config) -> tuple[list[str], list[str]]:
    """(changed keys applied live, changed keys that need a restart); unclassified keys count as
    needing a restart."""
    live: list[str] = []
    restart: list[str] = []
    for key in changed_keys(old, new):
        (live if classify_key(key) == "live" else restart).append(key)
    return live, restart


def merge_live(old: Config, new: Config, live: list[str]) -> Config:
    """``old`` with the ``live`` dotted keys taken from ``new`` (what a reload applied)."""
    merged = old.model_dump()
    source = new.model_dump()
    for key in live:
        *parents, leaf = key.split(".")
        dst, src = merged, source
        for part in parents:
            dst, src = dst[part], src[part]
        dst[leaf] = src[leaf]
    return Config.model_validate(merged)
