"""Peering grants, sans I/O: encoding, signatures, the redeemer's proof, every refusal reason,
and the granting side's records in the state store (kept across a reopen)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from clusterlink_gateway.peering import grants as core
from clusterlink_gateway.store.grants import GrantTable
from clusterlink_gateway.store.sqlite import Store
from support.pki import TestCA

NOW = 1_800_000_000


@pytest.fixture
def parties(tmp_path: Path) -> dict[str, object]:
    a, b = TestCA(tmp_path / "a", "party-a"), TestCA(tmp_path / "b", "party-b")
    return {"a": a, "b": b, "a_gw": a.issue("site-a"), "b_gw": b.issue("site-b")}


def make_grant(parties: dict, *, expires: int = NOW + 3600, peer: str = "site-b") -> tuple:
    a, gw = parties["a"], parties["a_gw"]
    grant = core.Grant(
        id=core.new_id(),
        sites=(core.Site("site-a", ("127.0.0.1:4443",)),),
        ca=a.ca_path.read_text(),
        cert=gw.cert.read_text(),
        peer_name=peer,
        expires=expires,
        secret=core.new_secret(),
    )
    text = core.encode(grant, gw.key.read_bytes())
    record = core.GrantRecord(
        id=grant.id,
        peer_name=peer,
        secret_hash=core.secret_hash(grant.secret),
        body_digest=core.decode(text).digest,
        expires=expires,
        uses=1,
        uses_left=1,
        created=NOW,
    )
    return grant, text, record


BINDING = "ab" * 32


def request(parties: dict, text: str, *, site: str = "site-b", binding: str = BINDING) -> bytes:
    b, gw = parties["b"], parties["b_gw"]
    r = core.Redemption(
        text,
        (core.Site(site, ("127.0.0.1:5443",)),),
        b.ca_path.read_text(),
        gw.cert.read_text(),
        binding,
    )
    return core.redemption_request(r, gw.key.read_bytes())


def test_grant_round_trip_holds_no_private_key(parties: dict) -> None:
    grant, text, _ = make_grant(parties)
    assert text.startswith(core.PREFIX)
    decoded = core.decode(text[:50] + "\n" + text[50:])  # copy-paste may wrap it
    assert decoded.grant == grant
    body = json.loads(decoded.body)
    assert set(body) == {"id", "sites", "ca", "cert", "peer_name", "expires", "secret"}
    assert "PRIVATE KEY" not in decoded.body.decode()
    assert len(core.b64d(grant.secret)) == 32


def test_accept_then_used_up_then_replayed(parties: dict) -> None:
    _, text, record = make_grant(parties)
    raw = request(parties, text)
    presented = core.parse_redemption(raw, binding=BINDING)
    assert core.decide(record, presented, NOW) == core.ACCEPTED
    core.redeemed(record, presented, NOW)
    assert record.uses_left == 0 and record.redemptions[0]["sites"] == ["site-b"]
    assert "secret" not in json.dumps(record.metadata(NOW))
    # the very same request bytes again: a replay
    assert core.decide(record, core.parse_redemption(raw, binding=BINDING), NOW) == core.REPLAYED
    # a fresh request (new signature) with the same grant: no uses left
    again = core.parse_redemption(request(parties, text), binding=BINDING)
    assert core.decide(record, again, NOW) == core.USED_UP
    assert record.metadata(NOW)["state"] == "used-up"


def test_expired(parties: dict) -> None:
    _, text, record = make_grant(parties, expires=NOW - 1)
    presented = core.parse_redemption(request(parties, text), binding=BINDING)
    assert core.decide(record, presented, NOW) == core.EXPIRED
    assert record.metadata(NOW)["state"] == "expired"


def test_revoked(parties: dict) -> None:
    _, text, record = make_grant(parties)
    record.revoked = True
    presented = core.parse_redemption(request(parties, text), binding=BINDING)
    assert core.decide(record, presented, NOW) == core.REVOKED


def test_unknown(parties: dict) -> None:
    _, text, _ = make_grant(parties)
    _, _, other = make_grant(parties)
    presented = core.parse_redemption(request(parties, text), binding=BINDING)
    assert core.decide(None, presented, NOW) == core.UNKNOWN
    assert core.decide(other, presented, NOW) == core.UNKNOWN


def _retext(text: str, change) -> str:
    body_b64, _, sig = text[len(core.PREFIX) :].partition(".")
    doc = json.loads(core.b64d(body_b64))
    change(doc)
    return core.PREFIX + core.b64e(core.canonical(doc)) + "." + sig


def test_tampered_body_or_signature(parties: dict) -> None:
    _, text, _ = make_grant(parties)

    def longer(doc: dict) -> None:
        doc["expires"] += 86400

    with pytest.raises(core.GrantError) as err:
        core.decode(_retext(text, longer))
    assert err.value.reason == core.TAMPERED
    flipped = text[:-3] + ("A" if text[-3] != "A" else "B") + text[-2:]
    with pytest.raises(core.GrantError) as err:
        core.decode(flipped)
    assert err.value.reason == core.TAMPERED


def test_tampered_resigned_by_another_party(parties: dict) -> None:
    """Party B re-signs a changed grant with its own key and bundle: the grant verifies by
    itself, but is not the one issued here."""
    _, text, record = make_grant(parties)
    decoded = core.decode(text)
    b, gw = parties["b"], parties["b_gw"]
    forged = core.Grant(
        **{
            **decoded.grant.__dict__,
            "ca": b.ca_path.read_text(),
            "cert": parties["b"].issue("site-a").cert.read_text(),
        }
    )
    forged_text = core.encode(forged, (b.dir / "site-a.key").read_bytes())
    presented = core.parse_redemption(request(parties, forged_text), binding=BINDING)
    assert core.decide(record, presented, NOW) == core.TAMPERED
    del gw


def test_tampered_secret(parties: dict) -> None:
    _, text, record = make_grant(parties)
    record.secret_hash = core.secret_hash(core.new_secret())
    presented = core.parse_redemption(request(parties, text), binding=BINDING)
    assert core.decide(record, presented, NOW) == core.TAMPERED


def test_redeemer_proof(parties: dict) -> None:
    _, text, _ = make_grant(parties)
    with pytest.raises(core.GrantError, match="another gateway"):
        core.parse_redemption(request(parties, text), binding="cd" * 32)
    with pytest.raises(core.GrantError, match="does not name its first site"):
        core.parse_redemption(request(parties, text, site="site-x"), binding=BINDING)
    raw = json.loads(request(parties, text))
    body = json.loads(core.b64d(raw["body"]))
    body["ca"] = parties["a"].ca_path.read_text()  # hand over another bundle than the signer's
    raw["body"] = core.b64e(core.canonical(body))
    with pytest.raises(core.GrantError) as err:
        core.parse_redemption(core.canonical(raw), binding=BINDING)
    assert err.value.reason == core.TAMPERED


def test_redeemer_must_be_the_named_peer(parties: dict) -> None:
    _, text, record = make_grant(parties, peer="site-c")
    presented = core.parse_redemption(request(parties, text), binding=BINDING)
    assert core.decide(record, presented, NOW) == core.BAD_REQUEST


def test_malformed_inputs(parties: dict) -> None:
    for bad in ("", "hello", core.PREFIX + "x", core.PREFIX + "!!!.###", "x" * 40000):
        with pytest.raises(core.GrantError):
            core.decode(bad)
    with pytest.raises(core.GrantError) as err:
        core.parse_redemption(b"{}", binding=BINDING)
    assert err.value.reason == core.BAD_REQUEST


def test_store_keeps_records_across_reopen(tmp_path: Path, parties: dict) -> None:
    _, text, record = make_grant(parties)

    async def run() -> None:
        store = Store(tmp_path / "state.db")
        await store.open()
        await GrantTable(store).put(record)
        await store.close()
        store = Store(tmp_path / "state.db")
        await store.open()
        table = GrantTable(store)
        got = await table.get(record.id)
        assert got == record
        assert await table.get("g-missing") is None
        got.revoked = True
        await table.put(got)
        assert [r.revoked for r in await table.list()] == [True]
        await store.close()

    asyncio.run(run())
    raw = (tmp_path / "state.db").read_bytes()
    secret = core.decode(text).grant.secret
    assert secret.encode() not in raw
    assert hashlib.sha256(b"x").hexdigest().encode() not in raw
