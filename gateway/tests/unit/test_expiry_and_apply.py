"""Pure parts of expiry reporting and of ``gwctl apply``: the status entry and gauges of a
certificate (also once expired), the table's duration, and apply's equality rule for an import
whose port was allocated."""

from __future__ import annotations

import datetime as dt

import pytest
from prometheus_client.core import GaugeMetricFamily

from clusterlink_gateway.cli.apply import FileError, _same, check_documents
from clusterlink_gateway.cli.render import _duration
from clusterlink_gateway.metrics import certificate_expiry
from clusterlink_gateway.model.objects import KINDS
from clusterlink_gateway.peering.trust import CertificateFacts

NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def _facts(days: float) -> CertificateFacts:
    return CertificateFacts("gateway", "CN=west", "ab" * 32, NOW + dt.timedelta(days=days))


def test_status_entry_counts_down_and_goes_negative() -> None:
    entry = _facts(20).document(NOW)
    assert entry == {
        "kind": "gateway",
        "subject": "CN=west",
        "fingerprint_sha256": "ab" * 32,
        "not_after": "2027-01-21T00:00:00Z",
        "expires_in_seconds": 20 * 86400,
        "expired": False,
    }
    late = _facts(-1.5).document(NOW)
    assert late["expires_in_seconds"] == -129600 and late["expired"] is True


def test_gauges_one_series_per_certificate() -> None:
    ca = CertificateFacts("ca", "CN=fabric", "cd" * 32, NOW + dt.timedelta(days=365))
    families: list[GaugeMetricFamily] = list(certificate_expiry([_facts(-2), ca], NOW))
    left, at = families
    assert left.name == "clusterlink_certificate_expiry_seconds"
    assert [(s.labels["kind"], s.value) for s in left.samples] == [
        ("gateway", -2 * 86400.0),
        ("ca", 365 * 86400.0),
    ]
    assert left.samples[1].labels == {
        "kind": "ca",
        "subject": "CN=fabric",
        "fingerprint": "cd" * 32,
    }
    assert at.name == "clusterlink_certificate_not_after_timestamp_seconds"
    assert at.samples[1].value == (NOW + dt.timedelta(days=365)).timestamp()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (20 * 86400 - 5, "19d 23h"),
        (3 * 3600 + 120, "3h 2m"),
        (42, "42s"),
        (-90000, "expired 1d 1h ago"),
    ],
)
def test_duration(seconds: int, text: str) -> None:
    assert _duration(seconds) == text


def test_allocated_import_port_equals_the_pinned_one() -> None:
    imports = KINDS["imports"]
    spec = {
        "port": 0,
        "bind": None,
        "sources": [{"peer": "e", "export": None}],
        "lb_scheme": "round-robin",
    }
    current = {"name": "db", "labels": {}, "spec": spec, "status": {"port": 41005}}
    wanted = {"name": "db", "labels": {}, "spec": {**spec, "port": 41005}}
    assert _same(imports, current, wanted)
    assert not _same(imports, current, {**wanted, "spec": {**spec, "port": 41006}})
    assert not _same(imports, current, {**wanted, "labels": {"a": "b"}})
    pinned = {**current, "spec": {**spec, "port": 41004}}
    assert not _same(imports, pinned, wanted)


def test_check_documents_orders_references_first_and_collects_every_problem() -> None:
    docs = [
        {"kind": "Policy", "name": "p", "spec": {"action": "allow", "from": [{}], "to": [{}]}},
        {"kind": "import", "name": "db", "spec": {"sources": [{"peer": "e"}]}},
        {"kind": "peers", "name": "e", "spec": {"gateways": [{"host": "10.0.0.1"}]}},
    ]
    assert [k.plural for k, _ in check_documents("f", docs)] == ["peers", "imports", "policies"]
    docs[1]["spec"]["lb_scheme"] = "fastest"
    docs[2]["spec"]["gateways"][0]["port"] = 0
    with pytest.raises(FileError) as err:
        check_documents("f", docs)
    assert "f: document 2 (import/db): spec.lb_scheme:" in str(err.value)
    assert "f: document 3 (peer/e): spec.gateways[0].port:" in str(err.value)
