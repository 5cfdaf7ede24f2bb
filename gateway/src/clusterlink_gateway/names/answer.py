"""The answer logic of the import name server: a pure function, no sockets.

``answer(query, zone, records)`` turns one parsed DNS query and the current imports into the
response. Inside the zone the gateway is authoritative (AA set, RA never): ``<import>.<zone>``
has an A or AAAA record for the import's listen address and an SRV record with its port;
``_<import>._tcp.<zone>`` (RFC 2782) has the same SRV record; the zone apex has an SOA; any
other name in the zone is NXDOMAIN (with the SOA for negative caching). A question outside the
zone is REFUSED with nothing answered: the gateway is no open resolver and never recurses.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

DEFAULT_TTL = 5
SRV_PRIORITY = 0
SRV_WEIGHT = 1


@dataclass(frozen=True)
class Record:
    """What the name of one import resolves to: the address clients connect to, its port."""

    address: str
    port: int

    @classmethod
    def for_listener(cls, bind: str, port: int) -> Record:
        """A listener on the wildcard address is reached on the loopback address."""
        ip = ipaddress.ip_address(bind)
        if ip.is_unspecified:
            ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
        return cls(str(ip), port)


def parse_zone(zone: str) -> dns.name.Name:
    """The zone as an absolute DNS name (``clusterlink.internal`` -> ``clusterlink.internal.``)."""
    return dns.name.from_text(zone.rstrip(".").lower() + ".")


def answer(
    query: dns.message.Message,
    zone: dns.name.Name,
    records: Mapping[str, Record],
    *,
    ttl: int = DEFAULT_TTL,
) -> dns.message.Message:
    """The response to ``query``; ``records`` maps import names to their Record."""
    response = dns.message.make_response(query, recursion_available=False)
    response.flags &= ~dns.flags.AA
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
        return response
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    qname, qtype = question.name, question.rdtype
    if (
        question.rdclass != dns.rdataclass.IN
        or not qname.is_subdomain(zone)
        or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)  # no zone transfers
    ):
        response.set_rcode(dns.rcode.REFUSED)
        return response
    response.flags |= dns.flags.AA
    found = _lookup(qname, zone, records)
    if found is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        response.authority.append(_soa(zone, ttl))
        return response
    kind, record, target = found
    answers: list[dns.rrset.RRset] = []
    if kind == "apex":
        if qtype in (dns.rdatatype.SOA, dns.rdatatype.ANY):
            answers.append(_soa(zone, ttl))
    elif kind == "address":
        assert record is not None
        address = _address(qname, record, ttl)
        if qtype in (address.rdtype, dns.rdatatype.ANY):
            answers.append(address)
        if qtype in (dns.rdatatype.SRV, dns.rdatatype.ANY):
            answers.append(_srv(qname, target, record, ttl))
            if qtype == dns.rdatatype.SRV:
                response.additional.append(address)
    elif kind == "srv":
        assert record is not None
        if qtype in (dns.rdatatype.SRV, dns.rdatatype.ANY):
            answers.append(_srv(qname, target, record, ttl))
            response.additional.append(_address(target, record, ttl))
    response.answer.extend(answers)
    if not answers:  # the name exists, not with this type: NODATA
        response.authority.append(_soa(zone, ttl))
    return response


def _lookup(
    qname: dns.name.Name, zone: dns.name.Name, records: Mapping[str, Record]
) -> tuple[str, Record | None, dns.name.Name] | None:
    """(kind, record, the import's own name), or None when the name does not exist. Kinds:
    "apex" (the zone), "address" (``<import>``), "srv" (``_<import>._tcp``), "empty" (a name
    above an existing one, such as ``_tcp.<zone>``: it exists, with no record)."""
    if qname == zone:
        return "apex", None, zone
    name = qname.relativize(zone).to_text().lower()
    by_name = {key.lower(): rec for key, rec in sorted(records.items(), reverse=True)}
    if name in by_name:
        return "address", by_name[name], qname
    service, _, rest = name.partition("._tcp")
    if service.startswith("_") and rest == "" and service[1:] in by_name:
        own = service[1:]
        return "srv", by_name[own], dns.name.from_text(own, origin=zone)
    existing = [*by_name, *(f"_{key}._tcp" for key in by_name)]
    if any(key.endswith("." + name) for key in existing):
        return "empty", None, qname
    return None


def _address(name: dns.name.Name, record: Record, ttl: int) -> dns.rrset.RRset:
    rdtype = dns.rdatatype.AAAA if ":" in record.address else dns.rdatatype.A
    return dns.rrset.from_text(name, ttl, dns.rdataclass.IN, rdtype, record.address)


def _srv(name: dns.name.Name, target: dns.name.Name, record: Record, ttl: int) -> dns.rrset.RRset:
    text = f"{SRV_PRIORITY} {SRV_WEIGHT} {record.port} {target.to_text()}"
    return dns.rrset.from_text(name, ttl, dns.rdataclass.IN, dns.rdatatype.SRV, text)


def _soa(zone: dns.name.Name, ttl: int) -> dns.rrset.RRset:
    text = f"localhost. hostmaster.{zone.to_text()} 1 3600 600 86400 {ttl}"
    return dns.rrset.from_text(zone, ttl, dns.rdataclass.IN, dns.rdatatype.SOA, text)
