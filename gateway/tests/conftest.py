"""Shared fixtures: a test CA and real gateway daemon processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from support.fabric import Fabric
from support.gateway import GatewayProcess
from support.pki import TestCA


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path / "pki")


@pytest.fixture
def gateways(tmp_path: Path, ca: TestCA) -> Iterator[dict[str, GatewayProcess]]:
    """Factory-ish dict: ``gateways["cl0"]`` is started on first use and stopped at the end."""
    started: dict[str, GatewayProcess] = {}

    class _Lazy(dict):
        def __missing__(self, name: str) -> GatewayProcess:
            gw = GatewayProcess(tmp_path, name, ca).start()
            started[name] = gw
            self[name] = gw
            return gw

    yield _Lazy()
    for gw in started.values():
        gw.stop()


@pytest.fixture
def gateway(gateways: dict[str, GatewayProcess]) -> GatewayProcess:
    return gateways["cl0"]


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    """Gateways cl0, cl1, ... started on first use, each with an echo service answering its name."""
    fab = Fabric(tmp_path)
    yield fab
    fab.close()
