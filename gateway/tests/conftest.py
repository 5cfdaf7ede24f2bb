"""Shared fixtures: a test CA and real gateway daemon processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
