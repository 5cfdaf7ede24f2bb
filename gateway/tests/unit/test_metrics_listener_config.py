"""``metrics:`` in gateway.yaml: off by default, validated, errors name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterlink_gateway.config import ConfigError, check_runtime, load_config, reload_plan


def load(tmp_path: Path, **settings: Any) -> Any:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump({"peer_name": "cl0", **settings}))
    return load_config(path)


def test_off_by_default(tmp_path: Path) -> None:
    assert load(tmp_path).metrics is None


def test_defaults_and_tls(tmp_path: Path) -> None:
    config = load(tmp_path, metrics={})
    assert (config.metrics.address, config.metrics.port, config.metrics.tls) == (
        "127.0.0.1",
        9469,
        None,
    )
    config = load(
        tmp_path, metrics={"address": "::1", "port": 9100, "tls": {"cert": "/c", "key": "/k"}}
    )
    assert config.metrics.tls.client_ca is None and str(config.metrics.tls.cert) == "/c"


@pytest.mark.parametrize(
    ("metrics", "field"),
    [
        ({"port": 0}, "metrics.port"),
        ({"port": 70000}, "metrics.port"),
        ({"port": "x"}, "metrics.port"),
        ({"address": "not-an-ip"}, "metrics.address"),
        ({"path": "/m"}, "metrics.path"),
        ({"tls": {"cert": "/c"}}, "metrics.tls.key"),
        ({"tls": {"cert": "/c", "key": "/k", "ca": "/x"}}, "metrics.tls.ca"),
        ("yes", "metrics"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, metrics: Any, field: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field.replace('.', '[.]')}: "):
        load(tmp_path, metrics=metrics)


def test_port_of_another_listener_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"metrics[.]port: 8443 on 127.0.0.1 is already listen.port"
    ):
        load(tmp_path, listen={"port": 8443}, metrics={"port": 8443})  # listen on 0.0.0.0
    admin_tcp = {"port": 9443, "cert": "/c", "key": "/k", "client_ca": "/a"}
    with pytest.raises(ConfigError, match=r"metrics[.]port: .* admin.tcp.port"):
        load(tmp_path, admin={"tcp": admin_tcp}, metrics={"port": 9443})
    # the same port on another address is fine
    load(tmp_path, listen={"address": "127.0.0.2", "port": 8443}, metrics={"port": 8443})


def test_changes_need_a_restart(tmp_path: Path) -> None:
    old = load(tmp_path)
    new = load(tmp_path, metrics={"port": 9100})
    assert reload_plan(old, new) == ([], ["metrics"])
    newer = load(tmp_path, metrics={"port": 9101})
    assert reload_plan(new, newer) == ([], ["metrics.port"])


def test_check_runtime_names_unusable_metrics_tls_files(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        metrics={"tls": {"cert": str(tmp_path / "none.crt"), "key": str(tmp_path / "none.key")}},
    )
    problems = check_runtime(config)
    assert any(p.startswith("metrics.tls: cannot load") for p in problems), problems
    assert not any(p.startswith("metrics") for p in check_runtime(load(tmp_path, metrics={})))
