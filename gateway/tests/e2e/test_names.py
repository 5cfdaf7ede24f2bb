"""Import names over DNS, end to end: a real gateway answers ``<import>.<zone>`` on its
loopback DNS port (queried with dnspython over UDP and TCP), an import with ``bind: auto``
listens on an address of its own at the service's real port, the names survive a restart, and
with ``workers: 2`` only the main process answers DNS."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from support.fabric import Fabric
from support.gateway import GatewayProcess, free_port
from support.pki import TestCA
from support.traffic import eventually, get

BIN = Path(sys.executable).parent
ZONE = "clusterlink.internal"


def query(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=5)


def records(msg: dns.message.Message) -> list[str]:
    return sorted(f"{dns.rdatatype.to_text(r.rdtype)} {rd}" for r in msg.answer for rd in r)


def udp_sockets_on_port(port: int) -> set[int]:
    inodes = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            inodes.add(int(fields[9]))
    return inodes


def holders(inodes: set[int]) -> set[int]:
    """PIDs holding any of the sockets ``inodes``."""
    pids = set()
    for proc in os.scandir("/proc"):
        if not proc.name.isdigit():
            continue
        try:
            fds = list(os.scandir(f"{proc.path}/fd"))
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                pids.add(int(proc.name))
    return pids


def test_import_names_answer_a_srv_nxdomain_refuse_other_zones_and_reach_the_service(
    fabric: Fabric, tmp_path: Path
) -> None:
    dns_port = free_port()
    subnet = f"127.77.{random.randint(1, 254)}"  # one of its own, beside other tests' gateways
    hosts_file = tmp_path / "names.hosts"
    config = {
        "workers": 2,
        "imports": {"address_range": f"{subnet}.0/24"},
        "dns": {"port": dns_port, "hosts_file": str(hosts_file)},
    }
    fabric.start("cl0")
    importer = fabric.start("cl1", extra=config)
    service_port = fabric.echo_port("cl0")
    fabric.export_echo("cl0", "web")
    fabric.allow_all("cl0", "cl1")
    fabric.add_peer("cl1", "cl0")
    client = fabric.client("cl1")
    client.create(
        "imports",
        {
            "name": "web",
            "spec": {"bind": "auto", "port": service_port, "sources": [{"peer": "cl0"}]},
        },
    )
    client.create("imports", {"name": "db", "spec": {"sources": [{"peer": "cl0"}]}})
    db_port = fabric.import_port("cl1", "db")
    address = f"{subnet}.1"

    status = client.get("imports", "web")["status"]
    assert status["dns_name"] == f"web.{ZONE}"
    assert status["address"] == address
    assert status["listen"] == f"{address}:{service_port}"

    # A and SRV, over UDP and TCP, authoritative, no recursion offered
    for tcp in (False, True):
        resp = query(dns_port, f"web.{ZONE}.", tcp=tcp)
        assert resp.rcode() == dns.rcode.NOERROR
        assert records(resp) == [f"A {address}"]
        assert resp.flags & dns.flags.AA and not resp.flags & dns.flags.RA
    assert records(query(dns_port, f"_web._tcp.{ZONE}.", "SRV")) == [
        f"SRV 0 1 {service_port} web.{ZONE}."
    ]
    assert records(query(dns_port, f"db.{ZONE}.")) == ["A 127.0.0.1"]
    assert records(query(dns_port, f"db.{ZONE}.", "SRV", tcp=True)) == [
        f"SRV 0 1 {db_port} db.{ZONE}."
    ]
    # unknown names: NXDOMAIN; other zones: REFUSED with nothing answered (no open resolver)
    assert query(dns_port, f"nope.{ZONE}.").rcode() == dns.rcode.NXDOMAIN
    for name in ("example.com.", "localhost."):
        resp = query(dns_port, name)
        assert resp.rcode() == dns.rcode.REFUSED and not resp.answer

    # the import with an address of its own is reached on the service's real port
    assert eventually(lambda: get(service_port, host=address), "cl0") == "cl0"

    # gwctl status shows each import's name
    out = subprocess.run(
        [str(BIN / "gwctl"), "--socket", str(importer.socket), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "DNS NAME" in out and f"web.{ZONE}" in out and f"db.{ZONE}" in out

    # the hosts-file copy of the names follows the imports
    assert hosts_file.read_text() == f"127.0.0.1\tdb.{ZONE}\n{address}\tweb.{ZONE}\n"
    client.delete("imports", "db")
    assert query(dns_port, f"db.{ZONE}.").rcode() == dns.rcode.NXDOMAIN
    assert hosts_file.read_text() == f"{address}\tweb.{ZONE}\n"

    # only the main process answers DNS (its worker serves imports, not names)
    main = importer.proc.pid  # type: ignore[union-attr]
    assert holders(udp_sockets_on_port(dns_port)) == {main}

    # a restart keeps the allocated address and the name
    assert importer.stop() == 0
    importer.start()
    assert records(query(dns_port, f"web.{ZONE}.")) == [f"A {address}"]
    assert eventually(lambda: get(service_port, host=address), "cl0") == "cl0"
    assert "Traceback" not in importer.log_text()


def test_a_dns_port_in_use_stops_the_start_naming_dns(ca: TestCA, tmp_path: Path) -> None:
    """Another program on the DNS port: the gateway refuses to start and says why."""
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        gw = GatewayProcess(tmp_path, "cl0", ca, extra={"dns": {"port": port}})
        gw.start(wait=False)
        assert gw.proc is not None
        assert gw.proc.wait(timeout=30) != 0
        assert f"dns: cannot listen on 127.0.0.1:{port}" in gw.log_text()
    finally:
        held.close()
        gw.stop()
