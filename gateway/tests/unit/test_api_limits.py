"""The admin API's pure limits: strict JSON, media types, connection slots, refusal logging."""

from __future__ import annotations

import logging

import pytest

from clusterlink_gateway.api.limits import (
    MAX_JSON_DEPTH,
    BadJSON,
    Refusals,
    Slots,
    json_depth,
    media_type_problem,
    parse_json,
)


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b"{}", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
        (b'{"a": "x\\"[[[["}', 1),  # nor after an escaped quote
        (b"[" * 10_000 + b"]" * 10_000, 10_000),
    ],
)
def test_json_depth(raw: bytes, depth: int) -> None:
    assert json_depth(raw) == depth


def test_parse_json_accepts_ordinary_objects() -> None:
    raw = b'{"name": "a", "spec": {"gateways": [{"host": "h", "port": 1}]}, "s": "\\u00e9[{"}'
    assert parse_json(raw) == {
        "name": "a",
        "spec": {"gateways": [{"host": "h", "port": 1}]},
        "s": "\u00e9[{",
    }


def test_parse_json_accepts_the_depth_limit_itself() -> None:
    raw = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_json(raw) is not None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"name": "a", "name": "b"}', "duplicate key 'name'"),
        (b'{"spec": {"port": 1, "port": 2}}', "duplicate key 'port'"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nested deeper than 32"),
        (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 32"),
        (b'{"a":' * 100_000, "nested deeper than 32"),  # unbalanced: still no recursion
        (b'{"port": NaN}', "NaN is not a JSON value"),
        (b'{"port": -Infinity}', "-Infinity is not a JSON value"),
        (b'{"name": "\xff"}', "not UTF-8"),
        (b'{"name": ', "not valid JSON"),
    ],
)
def test_parse_json_refuses_with_a_message(raw: bytes, message: str) -> None:
    with pytest.raises(BadJSON, match=message):
        parse_json(raw)


@pytest.mark.parametrize(
    ("content_type", "charset", "problem"),
    [
        ("application/json", None, None),
        ("Application/JSON", "UTF-8", None),
        ("application/json", "utf8", None),
        (None, None, "needs Content-Type: application/json"),
        ("text/plain", None, "Content-Type text/plain is not supported"),
        ("application/x-www-form-urlencoded", None, "not supported"),
        ("application/json", "latin-1", "charset latin-1 is not supported"),
    ],
)
def test_media_type_problem(content_type: str | None, charset: str | None, problem: str | None):
    found = media_type_problem(content_type, charset)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_slots_cap_and_release() -> None:
    slots = Slots(2)
    assert slots.acquire() and slots.acquire()
    assert not slots.acquire()
    slots.release()
    assert slots.acquire()
    for _ in range(5):
        slots.release()
    assert slots.used == 0


def test_refusals_count_everything_and_log_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counted: list[str] = []
    refusals = Refusals(counted.append, per_second=3)
    with caplog.at_level(logging.INFO, logger="clusterlink.api"):
        for _ in range(50):
            refusals("header-timeout", "no request within 1 s", listener="unix")
    assert counted == ["header-timeout"] * 50
    lines = [r for r in caplog.records if r.getMessage() == "admin request refused"]
    assert 3 <= len(lines) < 50
    assert lines[0].reason == "header-timeout" and lines[0].listener == "unix"  # type: ignore[attr-defined]
