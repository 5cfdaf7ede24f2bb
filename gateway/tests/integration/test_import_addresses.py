"""``bind: auto``: an import's own address from ``imports.address_range``, kept in the store."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from clusterlink_gateway.config import Config
from clusterlink_gateway.model.objects import KINDS
from clusterlink_gateway.registry import Conflict, Invalid, Registry
from clusterlink_gateway.store.sqlite import Store

IMPORTS = KINDS["imports"]


def imp(name: str, port: int = 5432, bind: str | None = "auto") -> dict:
    spec: dict = {"port": port, "sources": [{"peer": "cl1"}]}
    if bind is not None:
        spec["bind"] = bind
    return {"name": name, "spec": spec}


async def registry(path: Path, network: str | None = "127.77.0.0/30") -> Registry:
    reg = Registry(
        Store(path / "state.db"),
        import_bind="127.0.0.1",
        port_range=(30000, 30010),
        address_range=ipaddress.ip_network(network) if network else None,
    )
    await reg.store.open()
    await reg.load()
    return reg


@pytest.mark.asyncio
async def test_addresses_are_allocated_kept_across_restarts_and_released(tmp_path: Path) -> None:
    reg = await registry(tmp_path)
    a = await reg.create(IMPORTS, imp("a"))
    b = await reg.create(IMPORTS, imp("b"))
    assert (reg.effective_bind(a), reg.effective_port(a)) == ("127.77.0.1", 5432)
    assert (reg.effective_bind(b), reg.effective_port(b)) == ("127.77.0.2", 5432)
    # a change of the import keeps its address
    a = await reg.replace(IMPORTS, "a", {**imp("a", port=0), "labels": {"x": "y"}})
    assert reg.effective_bind(a) == "127.77.0.1"
    assert 30000 <= reg.effective_port(a) <= 30010
    await reg.store.close()

    reg = await registry(tmp_path)  # restart: the same addresses
    assert reg.effective_bind(reg.get(IMPORTS, "a")) == "127.77.0.1"
    assert reg.effective_bind(reg.get(IMPORTS, "b")) == "127.77.0.2"
    # the range (a /30: two host addresses) is full
    with pytest.raises(Conflict) as full:
        await reg.create(IMPORTS, imp("c"))
    assert full.value.field == "spec.bind" and "imports.address_range" in full.value.message
    # deleting an import releases its address
    await reg.delete(IMPORTS, "a")
    c = await reg.create(IMPORTS, imp("c"))
    assert reg.effective_bind(c) == "127.77.0.1"
    # bind turning away from auto gives the address back
    await reg.replace(IMPORTS, "c", imp("c", bind=None))
    d = await reg.create(IMPORTS, imp("d"))
    assert reg.effective_bind(d) == "127.77.0.1"
    assert reg.get(IMPORTS, "c").internal.get("address") is None
    await reg.store.close()


@pytest.mark.asyncio
async def test_an_address_used_as_explicit_bind_is_not_handed_out(tmp_path: Path) -> None:
    reg = await registry(tmp_path)
    await reg.create(IMPORTS, imp("fixed", bind="127.77.0.1"))
    auto = await reg.create(IMPORTS, imp("auto"))
    assert reg.effective_bind(auto) == "127.77.0.2"
    await reg.store.close()


@pytest.mark.asyncio
async def test_bind_auto_without_a_range_is_refused_naming_the_field(tmp_path: Path) -> None:
    reg = await registry(tmp_path, network=None)
    with pytest.raises(Invalid) as exc:
        await reg.create(IMPORTS, imp("a"))
    assert exc.value.field == "spec.bind"
    assert "imports.address_range" in exc.value.message
    assert not reg.objects["imports"]
    await reg.store.close()


@pytest.mark.asyncio
async def test_a_range_this_host_cannot_listen_on_is_refused(tmp_path: Path) -> None:
    reg = await registry(tmp_path, network="192.0.2.0/24")
    with pytest.raises(Invalid) as exc:
        await reg.create(IMPORTS, imp("a"))
    assert exc.value.field == "spec.bind"
    assert "192.0.2.1" in exc.value.message and "imports.address_range" in exc.value.message
    await reg.store.close()


def test_config_keys_validate_with_field_names() -> None:
    config = Config.model_validate(
        {
            "peer_name": "a",
            "imports": {"address_range": "127.77.0.0/16"},
            "dns": {"zone": "Fabric.Example.", "port": 5300},
        }
    )
    assert str(config.imports.address_range) == "127.77.0.0/16"
    assert config.dns is not None and config.dns.zone == "fabric.example"
    assert Config.model_validate({"peer_name": "a"}).dns is None
    with pytest.raises(ValueError, match="loopback"):
        Config.model_validate({"peer_name": "a", "dns": {"address": "10.1.2.3"}})
    with pytest.raises(ValueError, match="address_range"):
        Config.model_validate({"peer_name": "a", "imports": {"address_range": "127.77.0.1/16"}})
    with pytest.raises(ValueError, match="zone"):
        Config.model_validate({"peer_name": "a", "dns": {"zone": "bad zone"}})
