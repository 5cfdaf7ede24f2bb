"""``log.audit``: which audit lines reach the log, at which level (no sockets)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from clusterlink_gateway import audit
from clusterlink_gateway.config import ConfigError, load_config


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def capture() -> Iterator[Capture]:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)
    audit.configure("info")


@pytest.mark.parametrize(
    ("setting", "log_level", "written"),
    [
        ("info", "INFO", "INFO"),
        ("info", "DEBUG", "INFO"),
        ("info", "WARNING", None),
        ("debug", "INFO", None),
        ("debug", "DEBUG", "DEBUG"),
        ("off", "DEBUG", None),
        ("off", "INFO", None),
    ],
)
def test_audit_setting_and_log_level(
    capture: Capture, setting: str, log_level: str, written: str | None
) -> None:
    logging.getLogger().setLevel(log_level)
    audit.configure(setting)
    assert audit.enabled() is (written is not None)
    if audit.enabled():
        audit.write("connection", {"import": "db", "bytes_in": 3})
    lines = [r for r in capture.records if r.name == "clusterlink.audit"]
    assert [r.levelname for r in lines] == ([written] if written else [])
    if lines:
        assert lines[0].getMessage() == "connection" and lines[0].__dict__["import"] == "db"


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match=r"log\.audit"):
        audit.configure("verbose")


def test_config_key_is_validated(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "gateway.yaml"
    path.write_text("peer_name: a\nlog: {audit: loud}\n")
    with pytest.raises(ConfigError, match=r"log\.audit"):
        load_config(path)
    path.write_text("peer_name: a\nlog: {audit: off}\n")
    assert load_config(path).log.audit == "off"
    path.write_text("peer_name: a\n")
    assert load_config(path).log.audit == "info"
