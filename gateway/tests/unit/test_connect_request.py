"""The exporter's reading of a peer's CONNECT (``dataplane.request.parse_connect``), fuzzed:
any header list gives a well-formed request or a 400/403 ``RequestError``, never another
exception, and no header can state the caller's identity. Also driven through the real
sans-IO HTTP/2 core with arbitrary HEADERS blocks."""

from __future__ import annotations

import ipaddress

import h2.config
import h2.connection
import h2.exceptions
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clusterlink_gateway.dataplane.request import (
    REASONS,
    ConnectRequest,
    RequestError,
    normalise_headers,
    parse_connect,
)
from clusterlink_gateway.peering import h2core
from clusterlink_gateway.peering.h2core import H2Core, RequestReceived
from clusterlink_gateway.policy.attributes import PEER_NAME, source_attributes

CALLER = "cl1"  # what the certificate says; nothing in a request may change it
NAMES = [
    "x-clusterlink-export",
    "X-ClusterLink-Export",
    "x-clusterlink-client-ip",
    "x-clusterlink-import",
    "x-clusterlink-peer",
    "X-CLUSTERLINK-PEER",
    "x-clusterlink-peer-labels",
    ":path",
    ":method",
    "content-type",
]
VALUES = ["http-echo", "cl2", "10.0.0.1", "::1", "fe80::1%eth0", "", " ", "a" * 64, "a, b"]


def _either(text: st.SearchStrategy[str]) -> st.SearchStrategy[str | bytes]:
    """The same text as str, or as UTF-8 / Latin-1 bytes, or arbitrary bytes."""
    return st.one_of(
        text,
        text.map(lambda t: t.encode()),
        text.map(lambda t: t.encode("latin-1", "replace")),
        st.binary(max_size=40),
    )


names = _either(st.one_of(st.sampled_from(NAMES), st.text(max_size=30)))
values = _either(
    st.one_of(
        st.sampled_from(VALUES),
        st.text(max_size=80),  # includes non-ASCII, control characters
        st.integers(0, 3).map(lambda n: "x" * (70_000 * n)),  # huge values
    )
)
header_lists = st.lists(st.tuples(names, values), max_size=12)
optional_text = st.one_of(
    st.none(), st.sampled_from(["", "cl0", "cl0:443", "/"]), st.text(max_size=40)
)
methods = st.one_of(
    st.none(), st.sampled_from(["CONNECT", "GET", "connect", ""]), st.text(max_size=10)
)


def check(
    method: str | None, authority: str | None, path: str | None, headers: object
) -> ConnectRequest | RequestError:
    """parse_connect's outcome, with every invariant asserted."""
    pairs = normalise_headers(headers)  # type: ignore[arg-type]
    try:
        request = parse_connect(method, authority, path, headers)  # type: ignore[arg-type]
    except RequestError as exc:
        assert exc.status in (400, 403) and exc.reason in REASONS
        assert len(exc.message) < 200  # never echoes a huge value
        return exc
    # accepted: only a CONNECT with an authority, no :path, no identity header
    assert method == "CONNECT" and authority and path is None
    assert not any(name.startswith("x-clusterlink-peer") for name, _ in pairs)
    exports = [value for name, value in pairs if name == "x-clusterlink-export"]
    assert exports == [request.export]
    assert 1 <= len(request.export) <= 63 and request.export.isascii()
    if request.client_ip is not None:
        ipaddress.ip_address(request.client_ip)
    # the policy input names the certificate's peer, whatever the headers said
    attrs = source_attributes(CALLER, {}, request.client_ip)
    assert attrs[PEER_NAME] == CALLER
    return request


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(methods, optional_text, optional_text, header_lists)
@example("CONNECT", "cl0", None, [("x-clusterlink-export", "http-echo")])
@example("CONNECT", "cl0", None, [(b"x-clusterlink-export", b"http-echo"), (b":path", b"/")])
@example("CONNECT", "cl0", None, [("x-clusterlink-export", "e"), ("x-clusterlink-peer", "cl2")])
@example("CONNECT", "cl0", None, [("x-clusterlink-export", "e"), ("x-clusterlink-export", "e")])
@example("CONNECT", None, None, [("x-clusterlink-export", "e")])
@example("CONNECT", "cl0", "/", [("x-clusterlink-export", "e")])
def test_any_request_is_parsed_or_refused_with_a_4xx(
    method: str | None, authority: str | None, path: str | None, headers: list
) -> None:
    check(method, authority, path, headers)


@settings(max_examples=200, deadline=None)
@given(header_lists, st.booleans())
def test_a_header_can_never_state_the_caller(headers: list, as_dict: bool) -> None:
    spoof = [("x-clusterlink-export", "http-echo"), *headers, ("X-ClusterLink-Peer", "cl2")]
    source = {str(k): str(v) for k, v in spoof} if as_dict else spoof
    outcome = check("CONNECT", "cl0", None, source)
    assert isinstance(outcome, RequestError)  # never accepted (403, or 400 if also malformed)
    if not headers:
        assert (outcome.status, outcome.reason) == (403, "spoofed-identity")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-clusterlink-export": "http-echo"}, ConnectRequest("http-echo", None, None)),
        (
            {
                "x-clusterlink-export": "db",
                "x-clusterlink-client-ip": "::ffff:10.0.0.1",
                "x-clusterlink-import": "db",
            },
            ConnectRequest("db", "10.0.0.1", "db"),  # IPv4-mapped: the IPv4 address
        ),
        ({}, (400, "bad-request")),
        ({"x-clusterlink-export": "Bad_Name"}, (400, "bad-request")),
        ({"x-clusterlink-export": "e", "x-clusterlink-client-ip": "nope"}, (400, "bad-request")),
        ({"x-clusterlink-export": "e", "x-clusterlink-peer": "cl1"}, (403, "spoofed-identity")),
    ],
)
def test_examples(headers: dict[str, str], expected: object) -> None:
    outcome = check("CONNECT", "cl0:443", None, headers)
    if isinstance(outcome, RequestError):
        assert (outcome.status, outcome.reason) == expected
    else:
        assert outcome == expected


# -- through the sans-IO HTTP/2 core --------------------------------------------------------


raw_names = st.one_of(
    st.sampled_from([n.encode() for n in NAMES] + [b":authority", b":scheme", b":status"]),
    st.binary(min_size=1, max_size=20),
)
raw_values = st.one_of(
    st.sampled_from([v.encode() for v in VALUES] + [b"CONNECT", b"GET"]),
    st.binary(max_size=60),
)
raw_blocks = st.lists(st.tuples(raw_names, raw_values), max_size=10)


def _client() -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(
        client_side=True,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=False,
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    return conn


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_blocks, min_size=1, max_size=4), st.booleans())
def test_arbitrary_headers_blocks_through_the_core(blocks: list, with_method: bool) -> None:
    server = H2Core(client_side=False)
    server.initiate()
    client = _client()
    events: list[h2core.Event] = server.receive(client.data_to_send())
    for i, block in enumerate(blocks):
        prefix = [(b":method", b"CONNECT"), (b":authority", b"cl0:443")] if with_method else []
        try:
            client.send_headers(1 + 2 * i, [*prefix, *block] or [(b"x", b"")], end_stream=False)
        except h2.exceptions.ProtocolError:
            continue  # the test's client will not send it (a 1xx :status): nothing reaches us
        events += server.receive(client.data_to_send())  # never raises
        if server.failed:
            break
    for ev in events:
        if isinstance(ev, RequestReceived):
            check(ev.method, ev.authority, ev.path, ev.headers)
    server.output()  # whatever it answers (RST_STREAM, GOAWAY) serialises fine
