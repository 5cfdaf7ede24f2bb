"""The Peers' own trust anchors (``spec.trust.ca``) as the peering room takes them."""

from __future__ import annotations

from ..model.objects import Peer
from ..model.trust import anchor_facts, load_anchors
from ..peering.anchors import Bundle, PeerBundles
from ..registry import Entry, Registry

_cache: dict[str, Bundle] = {}  # canonical PEM -> parsed bundle (validated PEM is canonical)


def bundle_of(entry: Entry) -> Bundle | None:
    """The anchors of one Peer object, or None if it has no ``spec.trust``."""
    obj = entry.obj
    if not isinstance(obj, Peer) or obj.spec.trust is None:
        return None
    pem = obj.spec.trust.ca
    bundle = _cache.get(pem)
    if bundle is None:
        if len(_cache) > 1024:
            _cache.clear()
        bundle = _cache[pem] = Bundle.of(load_anchors(pem))
    return bundle


def peer_bundles(registry: Registry) -> PeerBundles:
    """Peer name -> its own anchors, for every Peer that carries ``spec.trust``."""
    out = {}
    for name, entry in registry.objects["peers"].items():
        bundle = bundle_of(entry)
        if bundle is not None:
            out[name] = bundle
    return out


def trust_status(entry: Entry) -> list[dict[str, str]]:
    """``status.trust`` of a Peer: subject, fingerprint and not_after of each own anchor."""
    obj = entry.obj
    if not isinstance(obj, Peer) or obj.spec.trust is None:
        return []
    return anchor_facts(obj.spec.trust.ca)
