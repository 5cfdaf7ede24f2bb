# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The gateway role's wiring of the import names into the host's resolver, without hosts.

The lab test (tests/integration/lab_e2e/test_scenarios.py) runs the /etc/hosts way on real
Debian hosts, which have no systemd-resolved. Here, on this machine and on temporary files
only: the role's choice of the way (``clusterlink_dns_resolver: auto`` -> resolved where
systemd-resolved is active, else hosts), the gateway.yaml ``dns`` section it generates, the
systemd-resolved drop-in it renders, and the /etc/hosts block helper of clusterlink-names.service
together with the removal that uninstall.yml does (blockinfile with the same marker).
"""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from clusterlink_gateway.config import Config

REPO = Path(__file__).resolve().parents[3]
ROLE = REPO / "roles" / "gateway"
BIN = Path(sys.executable).parent
HELPER = ROLE / "files" / "names_hosts.py"

PLAYBOOK = """
- hosts: all
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  vars:
    ansible_managed: managed
  tasks:
    - ansible.builtin.set_fact:
        __clusterlink_gateway_resolved_active: "{{{{ resolved_active | bool }}}}"
    - ansible.builtin.template:
        src: {role}/templates/resolved-clusterlink.conf.j2
        dest: "{{{{ out }}}}/dropin.conf"
        mode: "0644"
    - ansible.builtin.template:
        src: {role}/templates/gateway.yaml.j2
        dest: "{{{{ out }}}}/gateway.yaml"
        mode: "0644"
    - ansible.builtin.copy:
        content: "{{{{ __clusterlink_gateway_resolver }}}}"
        dest: "{{{{ out }}}}/resolver"
        mode: "0644"
- hosts: all
  gather_facts: false
  vars_files:
    - {role}/vars/main.yml
  tasks:
    - name: The removal of uninstall.yml (tasks/names_hosts_remove.yml), on a copy
      ansible.builtin.blockinfile:
        path: "{{{{ out }}}}/hosts-removed"
        marker: "{{{{ __clusterlink_gateway_hosts_marker }}}}"
        state: absent
"""


def render(
    tmp_path: Path, name: str, hosts: str = "127.0.0.1 localhost\n", **extra: object
) -> tuple[str, dict, str]:
    """Run the role's templates with ``extra`` vars: (resolver, gateway.yaml, drop-in); the
    second play removes the names block from a file holding ``hosts`` (``<name>/hosts-removed``)."""
    out = tmp_path / name
    out.mkdir()
    (out / "hosts-removed").write_text(hosts)
    (tmp_path / "pb.yml").write_text(PLAYBOOK.format(role=ROLE))
    (out / "vars.json").write_text(
        json.dumps({"out": str(out), "clusterlink_peer_name": "a", **extra})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_HOME=str(tmp_path / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "tmp"),
        ANSIBLE_NOCOLOR="1",
    )
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}",
         "-e", f"@{out / 'vars.json'}", str(tmp_path / "pb.yml")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((out / "gateway.yaml").read_text())
    return (out / "resolver").read_text(), config, (out / "dropin.conf").read_text()


def test_the_role_picks_the_resolver_way_and_configures_the_gateway(tmp_path: Path) -> None:
    resolver, config, dropin = render(tmp_path, "resolved", resolved_active=True)
    assert resolver == "resolved"
    assert config["dns"] == {"zone": "clusterlink.internal", "address": "127.0.0.1", "port": 8053}
    assert config["imports"]["address_range"] == "127.77.0.0/16"
    Config.model_validate(config)  # the daemon accepts what the role writes
    parsed = configparser.ConfigParser()
    parsed.read_string(dropin)
    assert dict(parsed["Resolve"]) == {"dns": "127.0.0.1:8053", "domains": "~clusterlink.internal"}

    resolver, config, _ = render(tmp_path, "hosts", resolved_active=False)
    assert resolver == "hosts"
    assert config["dns"]["hosts_file"] == "/run/clusterlink/names.hosts"
    Config.model_validate(config)

    resolver, config, dropin = render(
        tmp_path, "v6", resolved_active=True, clusterlink_dns_address="::1",
        clusterlink_dns_zone="fabric.example", clusterlink_dns_resolver="resolved",
    )  # fmt: skip
    assert resolver == "resolved"
    assert "DNS=[::1]:8053\nDomains=~fabric.example\n" in dropin

    resolver, config, _ = render(
        tmp_path, "off", resolved_active=True, clusterlink_dns=False,
        clusterlink_import_address_range="",
    )  # fmt: skip
    assert resolver == "none" and "dns" not in config
    assert "address_range" not in config["imports"]


def helper(source: Path, hosts: Path) -> str:
    proc = subprocess.run(
        [sys.executable, str(HELPER), str(source), str(hosts)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return proc.stdout


def test_hosts_block_follows_the_names_file_and_uninstall_removes_it(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    original = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n"
    hosts.write_text(original)
    hosts.chmod(0o644)
    source = tmp_path / "names.hosts"

    assert helper(source, hosts) == ""  # the gateway is stopped: nothing changes
    assert hosts.read_text() == original

    source.write_text("127.77.0.1\tweb.clusterlink.internal\nnot a line\n; rm -rf\tx\n")
    assert "1 import names" in helper(source, hosts)
    block = (
        "# BEGIN clusterlink.fabric import names\n"
        "127.77.0.1\tweb.clusterlink.internal\n"
        "# END clusterlink.fabric import names\n"
    )
    assert hosts.read_text() == original + block
    assert helper(source, hosts) == ""  # idempotent
    assert oct(hosts.stat().st_mode & 0o777) == "0o644"

    # lines an operator adds after the block stay; the block is replaced in place
    hosts.write_text(hosts.read_text() + "192.0.2.7\tother\n")
    source.write_text("127.77.0.1\tweb.clusterlink.internal\n127.0.0.1\tdb.clusterlink.internal\n")
    helper(source, hosts)
    assert (
        hosts.read_text()
        == original
        + block.replace("# END", "127.0.0.1\tdb.clusterlink.internal\n# END")
        + "192.0.2.7\tother\n"
    )

    # a host without /etc/hosts (minimal containers, the lab's Debian images) gets one
    missing = tmp_path / "none" / "hosts"
    missing.parent.mkdir()
    helper(source, missing)
    assert missing.read_text() == block.replace(
        "# END", "127.0.0.1\tdb.clusterlink.internal\n# END"
    )
    assert oct(missing.stat().st_mode & 0o777) == "0o644"

    # uninstall.yml's blockinfile (same marker) leaves the file as the operator had it
    render(tmp_path, "rm", hosts=hosts.read_text(), resolved_active=False)
    assert (tmp_path / "rm" / "hosts-removed").read_text() == original + "192.0.2.7\tother\n"
