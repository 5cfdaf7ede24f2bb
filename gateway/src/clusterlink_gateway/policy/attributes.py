"""Policy attribute keys (SPEC section 6) and the builders of attribute sets.

Who builds what:

* Importer (egress), once per candidate source of an import:

  - source = ``source_attributes(own peer name, own peer labels, client ip)``
  - destination = ``destination_attributes(candidate peer name, that peer's labels as
    learned from its heartbeats, the source's export name, the *import's* labels)``

* Exporter (ingress), per incoming stream:

  - source = ``source_attributes(caller peer name taken from its verified certificate,
    the labels of the exporter's own Peer object for that name -- never anything the
    caller sent, client ip forwarded by the importer)``
  - destination = ``destination_attributes(own peer name, own labels, export name,
    the export's labels)``

Pass the same client IP to ``PolicyEngine.decide`` for ``clientCIDRs`` matching. At the
exporter the client IP is the importer's claim: ``asserted_client_ip`` drops it for peers whose
Peer object says ``client_attributes: ignore`` (the policies then see an unknown address).
Label keys are used verbatim after the prefix, so only labels whose key has no ``/``
form attribute keys that a selector (Kubernetes qualified name) can name.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping

PEER_NAME = "peer.clusterlink.net/name"
PEER_LABEL_PREFIX = "peer.clusterlink.net/labels."
EXPORT_NAME = "export.clusterlink.net/name"
EXPORT_LABEL_PREFIX = "export.clusterlink.net/labels."
CLIENT_IP = "client.clusterlink.net/ip"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def peer_label(key: str) -> str:
    """Attribute key of peer label ``key``."""
    return PEER_LABEL_PREFIX + key


def export_label(key: str) -> str:
    """Attribute key of export (or import, at egress) label ``key``."""
    return EXPORT_LABEL_PREFIX + key


def parse_client_ip(value: str | IPAddress | None) -> IPAddress | None:
    """Parse a client address; IPv4-mapped IPv6 becomes IPv4. ValueError if malformed."""
    if value is None:
        return None
    if isinstance(value, str):
        return _parse_ip(value)  # clients come back: parsed once per address
    return _normalise(value)


@functools.lru_cache(maxsize=4096)
def _parse_ip(value: str) -> IPAddress:
    return _normalise(ipaddress.ip_address(value))


def _normalise(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def asserted_client_ip(claimed: str | None, setting: str | None, *, fabric: bool) -> str | None:
    """The client address an exporter may use for a peer's connection, or None (unknown).

    The address is asserted by the importing site, not observed. ``setting`` is the Peer's
    ``spec.client_attributes``: ``honor``, ``ignore``, or None (honour only from a peer whose
    certificate chains to the fabric CA, ``fabric``).
    """
    if setting == "ignore" or (setting is None and not fabric):
        return None
    return claimed


def source_attributes(
    peer_name: str, peer_labels: Mapping[str, str], client_ip: str | IPAddress | None
) -> dict[str, str]:
    """Source attributes: peer name, peer labels and (if known) the normalised client IP.

    Raises ValueError for a malformed ``client_ip`` (reject the request).
    """
    attrs = {PEER_LABEL_PREFIX + k: v for k, v in peer_labels.items()}
    attrs[PEER_NAME] = peer_name
    ip = parse_client_ip(client_ip)
    if ip is not None:
        attrs[CLIENT_IP] = str(ip)
    return attrs


def destination_attributes(
    peer_name: str,
    peer_labels: Mapping[str, str],
    export_name: str,
    export_labels: Mapping[str, str],
) -> dict[str, str]:
    """Destination attributes: exporting peer's name and labels, export name and labels."""
    attrs = {PEER_LABEL_PREFIX + k: v for k, v in peer_labels.items()}
    attrs.update((EXPORT_LABEL_PREFIX + k, v) for k, v in export_labels.items())
    attrs[PEER_NAME] = peer_name
    attrs[EXPORT_NAME] = export_name
    return attrs
