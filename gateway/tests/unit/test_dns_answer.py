"""The import name server's answer logic (``names.answer``), without sockets."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from clusterlink_gateway.names import Record, answer, parse_zone
from clusterlink_gateway.names.records import hosts_lines
from clusterlink_gateway.names.server import fit_udp, respond

ZONE = parse_zone("clusterlink.internal")
RECORDS = {
    "web": Record("127.77.0.1", 80),
    "db": Record("127.0.0.1", 30001),
    "v6": Record("::1", 8443),
}


def ask(name: str, rdtype: str = "A", **kwargs: object) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    return answer(query, ZONE, RECORDS)


def texts(section: list) -> list[str]:
    return sorted(
        f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
        for rrset in section
        for rd in rrset
    )


def test_a_record_for_an_import_is_authoritative_without_recursion() -> None:
    resp = ask("web.clusterlink.internal.")
    assert resp.rcode() == dns.rcode.NOERROR
    assert texts(resp.answer) == ["web.clusterlink.internal. A 127.77.0.1"]
    assert resp.flags & dns.flags.AA and resp.flags & dns.flags.QR
    assert not resp.flags & dns.flags.RA
    assert resp.answer[0].ttl == 5


def test_names_are_case_insensitive() -> None:
    assert texts(ask("WEB.ClusterLink.Internal.").answer) == [
        "WEB.ClusterLink.Internal. A 127.77.0.1"
    ]


def test_aaaa_for_an_ipv6_listener_and_nodata_for_the_other_family() -> None:
    assert texts(ask("v6.clusterlink.internal.", "AAAA").answer) == [
        "v6.clusterlink.internal. AAAA ::1"
    ]
    resp = ask("v6.clusterlink.internal.", "A")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer
    assert [dns.rdatatype.to_text(r.rdtype) for r in resp.authority] == ["SOA"]
    resp = ask("web.clusterlink.internal.", "AAAA")
    assert resp.rcode() == dns.rcode.NOERROR and not resp.answer


def test_srv_by_rfc2782_name_and_by_the_import_name_carry_the_port() -> None:
    resp = ask("_web._tcp.clusterlink.internal.", "SRV")
    assert texts(resp.answer) == [
        "_web._tcp.clusterlink.internal. SRV 0 1 80 web.clusterlink.internal."
    ]
    assert texts(resp.additional) == ["web.clusterlink.internal. A 127.77.0.1"]
    resp = ask("db.clusterlink.internal.", "SRV")
    assert texts(resp.answer) == ["db.clusterlink.internal. SRV 0 1 30001 db.clusterlink.internal."]


def test_unknown_name_in_the_zone_is_nxdomain_with_the_soa() -> None:
    for name in (
        "nope.clusterlink.internal.",
        "_nope._tcp.clusterlink.internal.",
        "a.web.clusterlink.internal.",
    ):
        resp = ask(name)
        assert resp.rcode() == dns.rcode.NXDOMAIN, name
        assert not resp.answer
        assert [dns.rdatatype.to_text(r.rdtype) for r in resp.authority] == ["SOA"]
        assert resp.flags & dns.flags.AA


def test_other_zones_are_refused_with_nothing_answered() -> None:
    for name in ("example.com.", "internal.", "clusterlink.internal.example.com.", "."):
        resp = ask(name, want_dnssec=False)
        assert resp.rcode() == dns.rcode.REFUSED, name
        assert not resp.answer and not resp.authority and not resp.additional
        assert not resp.flags & dns.flags.AA and not resp.flags & dns.flags.RA


def test_zone_transfers_are_refused() -> None:
    for rdtype in ("AXFR", "IXFR"):
        resp = ask("clusterlink.internal.", rdtype)
        assert resp.rcode() == dns.rcode.REFUSED and not resp.answer, rdtype


def test_non_in_class_is_refused_and_other_opcodes_not_implemented() -> None:
    resp = answer(dns.message.make_query("web.clusterlink.internal.", "A", "CH"), ZONE, RECORDS)
    assert resp.rcode() == dns.rcode.REFUSED
    query = dns.message.make_query("web.clusterlink.internal.", "A")
    query.set_opcode(dns.opcode.NOTIFY)
    assert answer(query, ZONE, RECORDS).rcode() == dns.rcode.NOTIMP


def test_apex_and_empty_non_terminals_exist_without_records() -> None:
    resp = ask("clusterlink.internal.", "SOA")
    assert [dns.rdatatype.to_text(r.rdtype) for r in resp.answer] == ["SOA"]
    for name in ("clusterlink.internal.", "_tcp.clusterlink.internal."):
        resp = ask(name, "A")
        assert resp.rcode() == dns.rcode.NOERROR and not resp.answer, name


def test_the_zone_is_configurable_and_the_answer_follows_the_current_imports() -> None:
    zone = parse_zone("Fabric.Example.")
    query = dns.message.make_query("web.fabric.example.", "A")
    assert answer(query, zone, RECORDS).rcode() == dns.rcode.NOERROR
    assert answer(query, zone, {}).rcode() == dns.rcode.NXDOMAIN
    assert (
        answer(dns.message.make_query("web.clusterlink.internal.", "A"), zone, RECORDS).rcode()
        == dns.rcode.REFUSED
    )


def test_wildcard_listener_resolves_to_loopback() -> None:
    assert Record.for_listener("0.0.0.0", 80) == Record("127.0.0.1", 80)
    assert Record.for_listener("::", 80) == Record("::1", 80)
    assert Record.for_listener("127.77.0.9", 80) == Record("127.77.0.9", 80)


def test_wire_layer_drops_responses_and_answers_garbage_with_formerr() -> None:
    query = dns.message.make_query("web.clusterlink.internal.", "A")
    out = respond(query.to_wire(), ZONE, lambda: RECORDS, 5)
    assert out is not None and dns.message.from_wire(out).id == query.id
    reply = dns.message.make_response(query)
    assert respond(reply.to_wire(), ZONE, lambda: RECORDS, 5) is None
    garbage = query.to_wire()[:12] + b"\xff\xff\xff"
    out = respond(garbage, ZONE, lambda: RECORDS, 5)
    assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.FORMERR
    assert respond(b"\x00", ZONE, lambda: RECORDS, 5) is None


def test_udp_answers_over_the_payload_size_are_truncated() -> None:
    query = dns.message.make_query("web.clusterlink.internal.", "A")
    small = answer(query, ZONE, RECORDS).to_wire()
    assert fit_udp(small, query.to_wire()) == small
    big = answer(query, ZONE, RECORDS)
    for i in range(60):  # a response over 512 bytes
        big.additional.append(
            dns.rrset.from_text(f"x{i}.clusterlink.internal.", 5, "IN", "A", "127.0.0.1")
        )
    wire = big.to_wire()
    assert len(wire) > 512
    cut = dns.message.from_wire(fit_udp(wire, query.to_wire()))
    assert cut.flags & dns.flags.TC and not cut.answer and cut.id == query.id
    edns = dns.message.make_query("web.clusterlink.internal.", "A", use_edns=0, payload=4096)
    assert fit_udp(wire, edns.to_wire()) == wire


def test_hosts_lines_list_every_import_by_name() -> None:
    assert hosts_lines("clusterlink.internal", RECORDS) == (
        "127.0.0.1\tdb.clusterlink.internal\n"
        "::1\tv6.clusterlink.internal\n"
        "127.77.0.1\tweb.clusterlink.internal\n"
    )


@pytest.mark.parametrize("rdtype", ["A", "SRV", "ANY", "TXT"])
def test_any_question_in_the_zone_gets_an_authoritative_answer(rdtype: str) -> None:
    resp = ask("web.clusterlink.internal.", rdtype)
    assert resp.rcode() == dns.rcode.NOERROR and resp.flags & dns.flags.AA
