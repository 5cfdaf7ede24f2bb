# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/status.yml against real gateway daemons: it warns about certificates within the
pki role's renewal thresholds and fails on an expired one.

Two "gateways" on localhost (connection local): ``warn`` has a certificate that expires in
20 days from a CA that expires in 30 days; ``expired`` has a certificate that expires a few
seconds after the daemon started (a gateway refuses to start with an expired one, so it
expires while it runs). The thresholds are checked per kind: the CA's (90d by default) and
the certificates' (30d) are different, and lowering them silences exactly what they cover.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from support.gateway import GatewayProcess
from support.pki import Issued, TestCA

from .conftest import BIN, REPO, Ansible

pytestmark = pytest.mark.slow

READ = "Read the gateway's status through its admin API"
EXPIRED = "Fail when a certificate has expired"


def short_lived(ca: TestCA, name: str, seconds: int) -> Issued:
    """A fabric certificate for ``name`` that expires ``seconds`` from now."""
    return ca.issue(name, seconds=seconds)


def gateway(root: Path, ca: TestCA, name: str, issue: Callable[[], Issued]) -> GatewayProcess:
    gw = GatewayProcess(root, name, ca, extra={"log": {"level": "info"}})
    gw.install_tls(issue(), ca.ca_path.read_bytes())  # after the constructor's own (same files)
    return gw.start()


def test_status_warns_within_the_renewal_threshold_and_fails_when_expired(
    ansible: Ansible, ca: TestCA, tmp_path: Path
) -> None:
    # gwctl where the gateway role links it: <install dir>/current/venv/bin/gwctl.
    install = tmp_path / "opt"
    (install / "current" / "venv" / "bin").mkdir(parents=True)
    (install / "current" / "venv" / "bin" / "gwctl").symlink_to(BIN / "gwctl")
    expires_at = time.monotonic() + 25
    gateways = [
        gateway(tmp_path / "gw", ca, "expired", lambda: short_lived(ca, "expired", 25)),
        gateway(tmp_path / "gw", ca, "warn", lambda: ca.issue("warn", days=20)),
    ]
    try:
        inventory = ansible.inventory(
            {
                gw.name: {
                    "ansible_become": False,
                    "clusterlink_admin_socket": str(gw.socket),
                    "clusterlink_gateway_install_dir": str(install),
                }
                for gw in gateways
            }
        )
        playbook = [  # an empty first play: Ansible.play takes a list without "hosts" as tasks
            {"hosts": "localhost", "gather_facts": False, "tasks": []},
            {"import_playbook": str(REPO / "playbooks" / "status.yml")},
        ]

        def status(*args: str):
            return ansible.play(playbook, inventory=inventory, args=args)

        # Defaults (the pki role's): certificates 30d, CAs 90d. Both of warn's expire within.
        default = status("--limit", "warn")
        assert default.returncode == 0, default.output[-3000:]
        info = default.result(READ, "warn")
        assert info["expiry"]["expired"] == []
        assert sorted(c["kind"] for c in info["expiry"]["expiring"]) == ["ca", "gateway"]
        warnings = " ".join(info.get("warnings", []))
        assert re.search(r"gateway certificate CN=warn expires in (19\.\d|20\.0) days", warnings)
        assert re.search(r"fabric CA CN=test-fabric expires in (29\.\d|30\.0) days", warnings)
        assert "within the renewal threshold (30 days)" in warnings, warnings
        assert "[WARNING]" in default.output or "warnings" in info  # shown, not hidden

        # Thresholds of the run: only the CA (30 days left) is within 40d; the certificate
        # (20 days left) is not within 10d. Swapped thresholds would report the other one.
        lowered = status(
            "--limit", "warn",
            "-e", "clusterlink_pki_cert_renew_before=10d",
            "-e", "clusterlink_pki_ca_renew_before=40d",
        )  # fmt: skip
        assert lowered.returncode == 0, lowered.output[-3000:]
        expiring = lowered.result(READ, "warn")["expiry"]["expiring"]
        assert [c["kind"] for c in expiring] == ["ca"], expiring

        # The short-lived certificate has expired by now (the daemon keeps running with it).
        time.sleep(max(0.0, expires_at - time.monotonic() + 2))
        both = status()
        assert both.returncode != 0
        expired = both.result(READ, "expired")["expiry"]["expired"]
        assert [(c["kind"], c["subject"]) for c in expired] == [("gateway", "CN=expired")]
        failed = both.result(EXPIRED, "expired")
        assert failed.get("failed") and "gateway CN=expired" in failed["msg"], failed
        assert not both.result(EXPIRED, "warn").get("failed")
    finally:
        for gw in gateways:
            gw.stop()
