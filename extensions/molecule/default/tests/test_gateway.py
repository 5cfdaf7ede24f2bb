# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Testinfra verifier of the molecule scenario: what site.yml leaves on each lab host."""

import json
import re

GWCTL = "/usr/local/bin/gwctl --socket /run/clusterlink/admin.sock"  # the role links it
UNIT = "clusterlink-gateway"


def test_service_enabled_and_running_as_its_own_user(host):
    svc = host.service(UNIT)
    assert svc.is_enabled and svc.is_running
    pid = host.check_output(f"systemctl show -p MainPID --value {UNIT}")
    assert host.check_output(f"ps -o user:32= -o group:32= -p {pid}").split() == [
        "clusterlink",
        "clusterlink",
    ]
    user = host.user("clusterlink")
    assert user.shell == "/usr/sbin/nologin"
    assert not host.file(user.home).exists


def test_only_expected_ports_listen(host):
    ports = {
        int(s.split(":")[-1])
        for s in host.socket.get_listening_sockets()
        if s.startswith(("tcp://", "udp://"))
    }
    # sshd (the lab's access), the peer port, the import names' DNS (127.0.0.1:8053, UDP and
    # TCP), and on a the import of b's "web".
    expected = {22, 443, 8053} | ({8080} if host.backend.get_hostname() == "a" else set())
    assert ports == expected


def test_modes_and_owners_of_keys_and_state(host):
    want = {
        "/etc/clusterlink": (0o750, "root", "clusterlink"),
        "/etc/clusterlink/gateway.yaml": (0o640, "root", "clusterlink"),
        "/etc/clusterlink/tls/gateway.key": (0o600, "clusterlink", "clusterlink"),
        "/var/lib/clusterlink": (0o750, "clusterlink", "clusterlink"),
        "/run/clusterlink/admin.sock": (0o660, "clusterlink", "clusterlink"),
    }
    for path, (mode, user, group) in want.items():
        f = host.file(path)
        assert f.exists, path
        assert (f.mode, f.user, f.group) == (mode, user, group), path


def test_unit_hardening_in_place(host):
    props = dict(
        line.split("=", 1)
        for line in host.check_output(
            f"systemctl show {UNIT} -p User -p NoNewPrivileges -p ProtectSystem -p ProtectHome "
            "-p PrivateTmp -p PrivateDevices -p CapabilityBoundingSet -p SystemCallFilter "
            "-p RestrictAddressFamilies -p MemoryDenyWriteExecute -p UMask"
        ).splitlines()
    )
    assert props["User"] == "clusterlink"
    assert props["NoNewPrivileges"] == "yes"
    assert props["ProtectSystem"] == "strict"
    assert props["ProtectHome"] == "yes"
    assert props["PrivateTmp"] == "yes" and props["PrivateDevices"] == "yes"
    assert props["MemoryDenyWriteExecute"] == "yes"
    assert props["CapabilityBoundingSet"] == "cap_net_bind_service"
    assert props["UMask"] == "0077"
    assert set(props["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    security = host.check_output(f"systemd-analyze security --no-pager {UNIT}")
    level = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security)
    assert level and float(level[1]) <= 1.4, security


def test_gwctl_linked_onto_the_path(host):
    link = host.file("/usr/local/bin/gwctl")
    assert link.is_symlink
    assert link.linked_to.startswith("/opt/clusterlink/") and link.linked_to.endswith("/gwctl")


def test_unit_keeps_its_sockets_across_restarts(host):
    props = host.check_output(
        f"systemctl show {UNIT} -p Type -p NotifyAccess -p FileDescriptorStoreMax"
    ).splitlines()
    assert sorted(props) == ["FileDescriptorStoreMax=4096", "NotifyAccess=main", "Type=notify"]


def test_gwctl_status_shows_peers_reachable(host):
    out = host.check_output(f"{GWCTL} status")
    assert "ready yes" in out, out
    peers = json.loads(host.check_output(f"{GWCTL} -o json get peers"))
    other = "b" if host.backend.get_hostname() == "a" else "a"
    assert [p["name"] for p in peers] == [other]
    assert all(p["status"]["reachable"] is True for p in peers), peers
