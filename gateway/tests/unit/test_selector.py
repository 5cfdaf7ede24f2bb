"""Selector models: Kubernetes label grammar validation and matching semantics."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from clusterlink_gateway.model.selector import (
    LabelSelector,
    PolicySpec,
    SelectorRequirement,
    SourceSelector,
)

ip = ipaddress.ip_address


def _error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[object, ...]]:
    return [e["loc"] for e in exc.value.errors()]


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "a" * 63,
        "env",
        "peer.clusterlink.net/name",
        "export.clusterlink.net/labels.env",
        "example.com/A_b-c.D",
        ("a" * 63 + ".") * 3 + "a" * 61 + "/x",  # 253-char prefix
        "1/2",
    ],
)
def test_valid_keys(key: str) -> None:
    assert SelectorRequirement(key=key, operator="Exists").key == key
    assert LabelSelector(matchLabels={key: "v"}).matchLabels == {key: "v"}


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("a" * 64, "63"),
        ("", "non-empty"),
        ("-a", "alphanumeric"),
        ("a-", "alphanumeric"),
        ("a b", "alphanumeric"),
        ("/name", "prefix part must be non-empty"),
        ("Example.com/name", "lowercase DNS subdomain"),
        ("exa_mple.com/name", "lowercase DNS subdomain"),
        ("-example.com/name", "lowercase DNS subdomain"),
        ("example..com/name", "lowercase DNS subdomain"),
        ("a" * 254 + "/x", "253"),
        ("a/b/c", "at most one '/'"),
        ("example.com/", "non-empty"),
        ("example.com/" + "n" * 64, "63"),
    ],
)
def test_invalid_keys(key: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as exc:
        SelectorRequirement(key=key, operator="Exists")
    assert _error_locs(exc) == [("key",)]
    with pytest.raises(ValidationError, match=why):
        LabelSelector(matchLabels={key: "v"})


def test_label_name_63_ok_64_rejected() -> None:
    LabelSelector(matchLabels={"x" * 63: "y" * 63})
    with pytest.raises(ValidationError):
        LabelSelector(matchLabels={"x" * 64: "y"})
    with pytest.raises(ValidationError):
        LabelSelector(matchLabels={"x": "y" * 64})


@pytest.mark.parametrize("value", ["", "a", "A.b_c-9", "v" * 63, "10.1.2.3"])
def test_valid_values(value: str) -> None:
    SelectorRequirement(key="k", operator="In", values=[value])
    LabelSelector(matchLabels={"k": value})


@pytest.mark.parametrize("value", ["v" * 64, "-a", "a.", "a b", "a/b", "fd00::1", "é"])
def test_invalid_values(value: str) -> None:
    with pytest.raises(ValidationError, match="invalid label value") as exc:
        SelectorRequirement(key="k", operator="NotIn", values=["ok", value])
    assert _error_locs(exc) == [("values", 1)]
    with pytest.raises(ValidationError, match="invalid label value"):
        LabelSelector(matchLabels={"k": value})


@pytest.mark.parametrize("op", ["In", "NotIn"])
def test_set_operators_need_values(op: str) -> None:
    with pytest.raises(ValidationError, match="requires at least one value") as exc:
        SelectorRequirement(key="k", operator=op)
    assert _error_locs(exc) == [("values",)]
    with pytest.raises(ValidationError, match="requires at least one value"):
        SelectorRequirement(key="k", operator=op, values=[])


@pytest.mark.parametrize("op", ["Exists", "DoesNotExist"])
def test_existence_operators_take_no_values(op: str) -> None:
    SelectorRequirement(key="k", operator=op)
    SelectorRequirement(key="k", operator=op, values=[])
    with pytest.raises(ValidationError, match="takes no values") as exc:
        SelectorRequirement(key="k", operator=op, values=["x"])
    assert _error_locs(exc) == [("values",)]


@pytest.mark.parametrize("op", ["in", "Equals", "NotExists", ""])
def test_unknown_operator_rejected(op: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SelectorRequirement(key="k", operator=op, values=["x"])
    assert _error_locs(exc) == [("operator",)]


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (SelectorRequirement, {"key": "k", "operator": "Exists", "value": "x"}),
        (LabelSelector, {"matchLabel": {"a": "b"}}),
        (LabelSelector, {"clientCIDRs": ["10.0.0.0/8"]}),  # only on `from` elements
        (SourceSelector, {"workloadSets": ["x"]}),
        (PolicySpec, {"action": "allow", "from": [{}], "to": [{}], "priority": 1}),
    ],
)
def test_unknown_field_rejected(model: type, data: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(data)


def test_error_location_is_nested() -> None:
    spec = {
        "action": "allow",
        "from": [
            {
                "matchExpressions": [
                    {"key": "a", "operator": "Exists"},
                    {"key": "b", "operator": "In", "values": ["bad value"]},
                ]
            }
        ],
        "to": [{}],
    }
    with pytest.raises(ValidationError) as exc:
        PolicySpec.model_validate(spec)
    assert _error_locs(exc) == [("from", 0, "matchExpressions", 1, "values", 0)]


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "10.0.0.0/8/8", "nope", "", "fd00::/129"])
def test_bad_cidr_rejected(cidr: str) -> None:
    with pytest.raises(ValidationError, match="invalid CIDR") as exc:
        SourceSelector(clientCIDRs=["10.0.0.0/8", cidr])
    assert _error_locs(exc) == [("clientCIDRs", 1)]


def test_cidrs_kept_as_written_and_matched_as_networks() -> None:
    cidrs = ["10.1.2.3/8", "192.168.1.7", "FD00:0::5/64", "::1"]
    sel = SourceSelector(clientCIDRs=cidrs)
    assert sel.clientCIDRs == cidrs  # echoed back exactly as sent
    for ip, expected in (
        ("10.200.0.1", True),
        ("11.0.0.1", False),
        ("192.168.1.7", True),
        ("192.168.1.8", False),
        ("fd00::ffff", True),
        ("fd01::1", False),
        ("::1", True),
    ):
        assert sel.matches({}, ipaddress.ip_address(ip)) is expected, ip


def test_policy_spec_alias_and_defaults() -> None:
    spec = PolicySpec.model_validate({"action": "deny", "from": [{}], "to": [{}]})
    assert spec.privileged is False
    assert spec.from_ == [SourceSelector()]
    by_name = PolicySpec(action="deny", from_=[SourceSelector()], to=[LabelSelector()])
    assert by_name == spec
    dumped = spec.model_dump(by_alias=True)
    assert "from" in dumped and "from_" not in dumped
    assert spec.model_dump() == dumped  # alias is the default for serialisation
    assert PolicySpec.model_validate_json(spec.model_dump_json()) == spec
    schema = PolicySpec.model_json_schema()
    assert schema["properties"]["from"]["minItems"] == 1
    assert schema["additionalProperties"] is False


def test_equality_ignores_compiled_state() -> None:
    assert SourceSelector(clientCIDRs=["10.0.0.0/8"]) == SourceSelector(clientCIDRs=["10.0.0.0/8"])
    assert SourceSelector(clientCIDRs=["10.0.0.0/8"]) != SourceSelector(clientCIDRs=["11.0.0.0/8"])
    assert LabelSelector(matchLabels={"a": "b"}) == LabelSelector.model_validate(
        {"matchLabels": {"a": "b"}}
    )
    assert LabelSelector(matchLabels={"a": "b"}) != LabelSelector(matchLabels={"a": "c"})


@pytest.mark.parametrize("field", ["from", "to"])
def test_policy_spec_empty_from_to_rejected(field: str) -> None:
    data: dict[str, object] = {"action": "allow", "from": [{}], "to": [{}]}
    data[field] = []
    with pytest.raises(ValidationError) as exc:
        PolicySpec.model_validate(data)
    assert _error_locs(exc) == [(field,)]
    del data[field]
    with pytest.raises(ValidationError):
        PolicySpec.model_validate(data)


@pytest.mark.parametrize("action", ["Allow", "DENY", "drop", ""])
def test_policy_spec_bad_action(action: str) -> None:
    with pytest.raises(ValidationError):
        PolicySpec.model_validate({"action": action, "from": [{}], "to": [{}]})


# --- matching ---------------------------------------------------------------------------


def req(key: str, op: str, *values: str) -> SelectorRequirement:
    return SelectorRequirement(key=key, operator=op, values=list(values))


def test_match_labels() -> None:
    sel = LabelSelector(matchLabels={"a": "1", "b": ""})
    assert sel.matches({"a": "1", "b": "", "c": "x"})
    assert not sel.matches({"a": "1"})  # b absent (not the same as empty)
    assert not sel.matches({"a": "2", "b": ""})
    assert not sel.matches({})


@pytest.mark.parametrize(
    ("op", "values", "attrs", "expected"),
    [
        ("In", ["x", "y"], {"k": "x"}, True),
        ("In", ["x", "y"], {"k": "z"}, False),
        ("In", ["x"], {}, False),
        ("In", [""], {"k": ""}, True),
        ("NotIn", ["x", "y"], {"k": "z"}, True),
        ("NotIn", ["x", "y"], {"k": "y"}, False),
        ("NotIn", ["x"], {}, True),  # absent key satisfies NotIn
        ("Exists", [], {"k": ""}, True),
        ("Exists", [], {"other": "k"}, False),
        ("DoesNotExist", [], {}, True),
        ("DoesNotExist", [], {"k": ""}, False),
    ],
)
def test_expression_semantics(
    op: str, values: list[str], attrs: dict[str, str], expected: bool
) -> None:
    assert LabelSelector(matchExpressions=[req("k", op, *values)]).matches(attrs) is expected


def test_everything_is_anded() -> None:
    sel = LabelSelector(
        matchLabels={"peer.clusterlink.net/name": "cl0"},
        matchExpressions=[req("env", "In", "prod", "test"), req("tmp", "DoesNotExist")],
    )
    assert sel.matches({"peer.clusterlink.net/name": "cl0", "env": "prod"})
    assert not sel.matches({"peer.clusterlink.net/name": "cl1", "env": "prod"})
    assert not sel.matches({"peer.clusterlink.net/name": "cl0", "env": "dev"})
    assert not sel.matches({"peer.clusterlink.net/name": "cl0", "env": "test", "tmp": "1"})


def test_source_selector_cidrs() -> None:
    labels_only = SourceSelector(matchLabels={"a": "b"})
    assert labels_only.matches({"a": "b"}, None)
    assert labels_only.matches({"a": "b"}, ip("1.2.3.4"))

    sel = SourceSelector(matchLabels={"a": "b"}, clientCIDRs=["10.0.0.0/8", "fd00::/8"])
    assert sel.matches({"a": "b"}, ip("10.9.9.9"))
    assert sel.matches({"a": "b"}, ip("fd12::1"))
    assert sel.matches({"a": "b"}, ip("::ffff:10.1.1.1"))  # IPv4-mapped
    assert not sel.matches({"a": "c"}, ip("10.9.9.9"))  # label part still required
    assert not sel.matches({"a": "b"}, ip("11.0.0.1"))
    assert not sel.matches({"a": "b"}, ip("fe80::1"))
    assert not sel.matches({"a": "b"}, None)  # no client IP: CIDR selector never matches
    assert not sel.matches({"a": "b"})


def test_ipv6_only_cidr() -> None:
    sel = SourceSelector(clientCIDRs=["2001:db8::/32"])
    assert sel.matches({}, ip("2001:db8:1::7"))
    assert not sel.matches({}, ip("2001:db9::1"))
    assert not sel.matches({}, ip("32.1.13.184"))  # same bits as IPv4: no cross-version match


# --- properties -------------------------------------------------------------------------

_chars = st.sampled_from("abcxyz019-_.")
label_text = st.text(_chars, min_size=1, max_size=8).filter(
    lambda s: s[0].isalnum() and s[-1].isalnum()
)
attr_maps = st.dictionaries(label_text, label_text, max_size=6)


@given(attr_maps)
def test_empty_selector_matches_everything(attrs: dict[str, str]) -> None:
    assert LabelSelector().matches(attrs)
    assert LabelSelector.model_validate({}).matches(attrs)
    assert SourceSelector().matches(attrs, None)


@given(label_text, st.lists(label_text, min_size=1, max_size=4), attr_maps)
def test_in_notin_complement(key: str, values: list[str], attrs: dict[str, str]) -> None:
    in_sel = LabelSelector(matchExpressions=[req(key, "In", *values)])
    notin_sel = LabelSelector(matchExpressions=[req(key, "NotIn", *values)])
    if key in attrs:
        assert in_sel.matches(attrs) != notin_sel.matches(attrs)
    else:
        assert not in_sel.matches(attrs) and notin_sel.matches(attrs)


@given(label_text, attr_maps)
def test_exists_complement(key: str, attrs: dict[str, str]) -> None:
    exists = LabelSelector(matchExpressions=[req(key, "Exists")]).matches(attrs)
    absent = LabelSelector(matchExpressions=[req(key, "DoesNotExist")]).matches(attrs)
    assert exists != absent
    assert exists == (key in attrs)


@given(attr_maps, attr_maps)
def test_match_labels_is_subset(wanted: dict[str, str], attrs: dict[str, str]) -> None:
    expected = all(attrs.get(k) == v for k, v in wanted.items())
    assert LabelSelector(matchLabels=wanted).matches(attrs) is expected
    # matchLabels {k: v} is equivalent to the expression k In [v]
    exprs = [req(k, "In", v) for k, v in wanted.items()]
    assert LabelSelector(matchExpressions=exprs).matches(attrs) is expected
