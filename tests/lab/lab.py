"""A lab: booted Debian hosts (systemd + sshd) in network namespaces, created and destroyed whole.

Layout of a lab named ``L`` (state dir ``$CLUSTERLINK_LAB_STATE/L``)::

    state.json  id_ed25519[.pub]  inventory.yml  .lock
    hosts/H/{upper,work,root,nspawn.log}   # root = overlay(lower=image, upper, work)

Kernel objects are named so a lab can always find its own: namespaces ``cl.L.H`` (hosts) and
``clr.L`` (router); interfaces ``cl?TAG...`` where TAG is a hash of the lab name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import image, net, remote
from .util import LabError, log, mountpoints, remove_tree, run

TOPOLOGIES = ("flat", "cloud")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
HOST_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")


def _flat_net() -> str:
    """First three octets of the flat subnet (env ``CLUSTERLINK_LAB_FLAT_NET``, default
    198.18.0): engineers who need two flat labs at once give the second one its own /24."""
    value = os.environ.get("CLUSTERLINK_LAB_FLAT_NET", "198.18.0")
    octets = value.split(".")
    if len(octets) != 3 or not all(o.isdigit() and int(o) < 256 for o in octets):
        raise LabError(f"CLUSTERLINK_LAB_FLAT_NET={value!r}: want three octets like 198.18.0")
    return value


FLAT_NET = _flat_net()
PUBLIC_NET = "198.19.0"
FIRST_HOST = 10
ROUTER_OCTET = 254
SSH_OPTIONS = remote.SSH_OPTIONS
MAX_SESSIONS = 64  # sshd's MaxSessions on lab hosts: concurrent commands per host
ROUTER_TABLE = "clusterlink_lab"
# nspawn processes started by this Python process, so they can be reaped after they exit.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def state_root() -> Path:
    """Directory holding one state dir per lab (env ``CLUSTERLINK_LAB_STATE``)."""
    return Path(os.environ.get("CLUSTERLINK_LAB_STATE", "/var/lib/clusterlink-lab"))


def list_labs() -> list[str]:
    """Names of the labs that have a state dir."""
    root = state_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.match(p.name))


def _tag(name: str) -> str:
    """Short hash of a lab name used in its interface names (IFNAMSIZ is 16)."""
    return hashlib.sha256(name.encode()).hexdigest()[:6]


@dataclass
class Site:
    """A cloud site: a private bridge behind the router, reachable via one public address."""

    name: str
    index: int
    bridge: str
    router_veth: str
    subnet: str
    controller_address: str
    router_address: str
    public_address: str
    first_host: str
    # Outbound-only: the router SNATs what leaves the site and forwards nothing in (no DNAT).
    outbound_only: bool = False


@dataclass
class Host:
    """One lab host; ``address`` is its management address (what SSH and Ansible use)."""

    name: str
    index: int
    address: str
    gateway: str
    netns: str
    veth: str
    bridge: str
    site: str | None = None
    pid: int | None = None
    pid_start: int | None = None
    image: str = image.SUITE  # the Debian release the host boots (tests.lab.image.SUITES)

    @property
    def machine(self) -> str:
        """The systemd-nspawn machine name (unique across labs; equals the netns name)."""
        return self.netns


@dataclass
class _State:
    name: str
    topology: str
    public_port: int
    hosts: dict[str, Host] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    # The process that last created or repaired the lab: (pid, start time).
    owner: tuple[int, int] | None = None


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a process from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _nspawn_root(pid: int) -> str | None:
    """The ``-D`` directory of a running systemd-nspawn process, else None."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if not argv or not argv[0].endswith(b"systemd-nspawn"):
        return None
    for i, arg in enumerate(argv[:-1]):
        if arg == b"-D":
            return argv[i + 1].decode()
    return None


def _cgroup_mounts() -> list[Path]:
    """Mount points of the hierarchies nspawn uses: name=systemd (v1) and/or the v2 one."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            pre, _, post = line.partition(" - ")
            fstype, _source, opts = post.split()[:3]
            if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
                found.append(Path(pre.split()[4]))
    return found


def _cgroup_dirs(machine: str) -> list[Path]:
    """The per-host cgroups each container is started in.

    With ``--keep-unit`` nspawn puts a container's processes below its *own* cgroup, so two
    containers started from one cgroup would share ``payload/system.slice/X.service`` and each
    container's systemd would kill the other's services; hence one cgroup per host.
    """
    return [m / "clusterlink-lab" / machine for m in _cgroup_mounts()]


def _cgroup_procs(d: Path) -> list[int]:
    pids = []
    for sub, _dirs, files in os.walk(d):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                pids += [int(p) for p in (Path(sub) / "cgroup.procs").read_text().split()]
    return pids


def _remove_cgroup(d: Path) -> None:
    """Remove an (empty of processes) cgroup tree, and its parent if nothing else uses it."""
    if not d.is_dir():
        return
    for sub, _dirs, _files in os.walk(d, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(sub)
    with contextlib.suppress(OSError):
        os.rmdir(d.parent)


def _reap(pid: int) -> None:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _reclaim_stale_holder(address: str) -> None:
    """Destroy the lab whose bridge holds ``address`` if that lab is stale."""
    holder = net.addresses().get(address)
    if holder is None:
        return
    for name in list_labs():
        if holder.startswith("clb") and holder[3:9] == _tag(name):
            other = Lab(name)
            if other.is_stale():
                log(f"lab {name} holds {address} but its creator and hosts are gone: removing it")
                other.destroy()
            return


def create_when_free(name: str, wait: float = 900, **kw: Any) -> Lab:
    """Create lab ``name`` (``Lab.create`` keywords); flat labs share one subnet, so while a
    live lab holds it, wait up to ``wait`` seconds for it to go."""
    deadline = time.monotonic() + wait
    while True:
        lab = Lab(name)
        try:
            return lab.create(**kw)
        except LabError as exc:
            lab.destroy()
            if "already assigned" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(10)


def _is_mounted(path: Path) -> bool:
    return str(path) in mountpoints()


def _parallel(fn: Callable[[Host], Any], hosts: Sequence[Host]) -> list[Any]:
    return _parallel_map(fn, hosts)


def _parallel_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    if len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return list(pool.map(fn, items))


class Lab:
    """A named lab; ``create`` and ``destroy`` are idempotent."""

    def __init__(self, name: str) -> None:
        if not NAME_RE.match(name) or name.endswith("-"):
            raise LabError(f"invalid lab name {name!r} (want {NAME_RE.pattern})")
        self.name = name
        self.dir = state_root() / name
        self.tag = _tag(name)
        self._state: _State | None = None
        # Units that failed on each host during the last create/start (host -> unit names).
        self.failed_units: dict[str, list[str]] = {}
        self._load()

    # ----- paths and names -------------------------------------------------------------
    @property
    def key_path(self) -> Path:
        """Private SSH key that logs in as root on every host."""
        return self.dir / "id_ed25519"

    @property
    def inventory_path(self) -> Path:
        """Ansible inventory written by ``create``."""
        return self.dir / "inventory.yml"

    @property
    def router_netns(self) -> str:
        """Network namespace of the cloud router."""
        return f"clr.{self.name}"

    @property
    def nft_table(self) -> str:
        """nftables table (family inet) this lab adds to the root namespace."""
        return f"clusterlink_lab_{self.tag}"

    @property
    def public_veth(self) -> str:
        """Root-namespace end of the router's public leg."""
        return f"clp{self.tag}"

    @property
    def hosts(self) -> dict[str, Host]:
        """Hosts by name (empty if the lab does not exist)."""
        return self._state.hosts if self._state else {}

    @property
    def sites(self) -> dict[str, Site]:
        """Cloud sites by name (empty for flat labs)."""
        return self._state.sites if self._state else {}

    @property
    def topology(self) -> str | None:
        """``flat`` or ``cloud``, None if the lab does not exist."""
        return self._state.topology if self._state else None

    @property
    def public_port(self) -> int | None:
        """The only port a cloud site's public address forwards."""
        return self._state.public_port if self._state else None

    def exists(self) -> bool:
        """True if the lab has a state dir."""
        return self.dir.exists()

    def _host_dir(self, host: str) -> Path:
        return self.dir / "hosts" / host

    def _root(self, host: str) -> Path:
        return self._host_dir(host) / "root"

    def _host(self, host: str) -> Host:
        try:
            return self.hosts[host]
        except KeyError:
            raise LabError(f"lab {self.name} has no host {host!r}") from None

    # ----- state -----------------------------------------------------------------------
    def _load(self) -> None:
        path = self.dir / "state.json"
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            self._state = None
            return
        except ValueError as exc:
            raise LabError(f"corrupt {path}: {exc}") from exc
        self._state = _State(
            name=raw["name"],
            topology=raw["topology"],
            public_port=raw["public_port"],
            hosts={h["name"]: Host(**h) for h in raw["hosts"]},
            sites={s["name"]: Site(**s) for s in raw["sites"]},
            owner=tuple(raw["owner"]) if raw.get("owner") else None,  # type: ignore[arg-type]
        )
        for name in raw.get("outbound_only", []):
            self._state.sites[name].outbound_only = True

    def _save(self) -> None:
        assert self._state is not None
        data = {
            "name": self._state.name,
            "topology": self._state.topology,
            "public_port": self._state.public_port,
            "hosts": [asdict(h) for h in self._state.hosts.values()],
            # Site flags stay out of the site records, which older lab code loads strictly.
            "sites": [
                {k: v for k, v in asdict(s).items() if k != "outbound_only"}
                for s in self._state.sites.values()
            ],
            "outbound_only": [s.name for s in self._state.sites.values() if s.outbound_only],
            "owner": list(self._state.owner) if self._state.owner else None,
        }
        tmp = self.dir / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        tmp.replace(self.dir / "state.json")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _plan(
        self,
        hosts: Sequence[str],
        topology: str,
        sites: Mapping[str, str] | None,
        port: int,
        images: Mapping[str, str] | None = None,
        outbound_only: Collection[str] | None = None,
    ) -> _State:
        if topology not in TOPOLOGIES:
            raise LabError(f"unknown topology {topology!r} (want one of {TOPOLOGIES})")
        names = sorted(set(hosts))
        if not names:
            raise LabError("a lab needs at least one host")
        if len(names) > 200:
            raise LabError("at most 200 hosts per lab")
        for h in names:
            if not HOST_RE.match(h) or h.endswith("-"):
                raise LabError(f"invalid host name {h!r} (want {HOST_RE.pattern})")
        unknown_hosts = set(images or {}) - set(names)
        if unknown_hosts:
            raise LabError(f"images names unknown hosts: {sorted(unknown_hosts)}")
        for suite in (images or {}).values():
            image.check_suite(suite)
        state = self._plan_network(names, topology, sites, port)
        for h in state.hosts.values():
            h.image = (images or {}).get(h.name, image.SUITE)
        outbound = set(outbound_only or ())
        if outbound and topology != "cloud":
            raise LabError("outbound_only only applies to the cloud topology")
        unknown_sites = outbound - set(state.sites)
        if unknown_sites:
            raise LabError(
                f"outbound_only names unknown sites: {sorted(unknown_sites)} "
                f"(sites: {sorted(state.sites)})"
            )
        for s in state.sites.values():
            s.outbound_only = s.name in outbound
        return state

    def _plan_network(
        self, names: list[str], topology: str, sites: Mapping[str, str] | None, port: int
    ) -> _State:
        state = _State(self.name, topology, port)
        if topology == "flat":
            if sites:
                raise LabError("--sites only applies to the cloud topology")
            for i, h in enumerate(names):
                state.hosts[h] = Host(
                    name=h,
                    index=i,
                    address=f"{FLAT_NET}.{FIRST_HOST + i}",
                    gateway=f"{FLAT_NET}.1",
                    netns=f"cl.{self.name}.{h}",
                    veth=f"clv{self.tag}h{i}",
                    bridge=f"clb{self.tag}s0",
                )
            return state
        mapping = dict(sites or {})
        unknown = set(mapping) - set(names)
        if unknown:
            raise LabError(f"--sites names unknown hosts: {sorted(unknown)}")
        site_of = {h: mapping.get(h, f"site{i + 1}") for i, h in enumerate(names)}
        order = sorted(set(site_of.values()))  # site k (1-based, name order) -> 198.18.k.0/24
        if len(order) > 250:
            raise LabError("at most 250 sites")
        for k, s in enumerate(order, start=1):
            if not HOST_RE.match(s):
                raise LabError(f"invalid site name {s!r} (want {HOST_RE.pattern})")
            members = [h for h in names if site_of[h] == s]
            state.sites[s] = Site(
                name=s,
                index=k,
                bridge=f"clb{self.tag}s{k}",
                router_veth=f"clr{self.tag}s{k}",
                subnet=f"198.18.{k}.0/24",
                controller_address=f"198.18.{k}.1",
                router_address=f"198.18.{k}.{ROUTER_OCTET}",
                public_address=f"{PUBLIC_NET}.{FIRST_HOST + k}",
                first_host=members[0],
            )
            for j, h in enumerate(members):
                state.hosts[h] = Host(
                    name=h,
                    index=names.index(h),
                    address=f"198.18.{k}.{FIRST_HOST + j}",
                    gateway=f"198.18.{k}.{ROUTER_OCTET}",
                    netns=f"cl.{self.name}.{h}",
                    veth=f"clv{self.tag}h{names.index(h)}",
                    bridge=f"clb{self.tag}s{k}",
                    site=s,
                )
        state.hosts = dict(sorted(state.hosts.items()))
        return state

    # ----- create ----------------------------------------------------------------------
    def create(
        self,
        hosts: Sequence[str],
        topology: str = "flat",
        sites: Mapping[str, str] | None = None,
        public_port: int = 443,
        timeout: float = 120,
        images: Mapping[str, str] | None = None,
        outbound_only: Collection[str] | None = None,
    ) -> Lab:
        """Create the lab, or repair an existing one with the same shape; hosts end up running.

        ``images`` maps host names to the Debian release they boot (``bookworm`` by default,
        also ``trixie`` and ``bullseye``: ``tests.lab.image.SUITES``); each release's image is
        built once and cached. ``outbound_only`` (cloud only) names sites that accept no
        inbound connection at all: their router SNATs outgoing traffic and DNATs nothing; the
        controller keeps SSH to their hosts. Creating again with other ``outbound_only``
        sites reconfigures the firewalls in place."""
        started = time.monotonic()
        plan = self._plan(hosts, topology, sites, public_port, images, outbound_only)
        for other in list_labs():
            if other != self.name and _tag(other) == self.tag:
                raise LabError(f"lab name {self.name!r} collides with lab {other!r}; rename")
        suites = sorted({h.image for h in plan.hosts.values()})
        built = _parallel_map(lambda s: image.ensure_image(suite=s), suites)
        bases = dict(zip(suites, built, strict=True))
        with self._locked():
            self._load()
            if self._state is not None:
                old = self._state
                same = (
                    old.topology == plan.topology
                    and old.public_port == plan.public_port
                    and {h: (x.address, x.site, x.image) for h, x in old.hosts.items()}
                    == {h: (x.address, x.site, x.image) for h, x in plan.hosts.items()}
                )
                if not same:
                    raise LabError(
                        f"lab {self.name} exists with a different shape; destroy it first"
                    )
                for h, x in plan.hosts.items():
                    x.pid, x.pid_start = old.hosts[h].pid, old.hosts[h].pid_start
            me = _proc_start(os.getpid())
            plan.owner = (os.getpid(), me[1]) if me else None
            self._state = plan
            self._save()
            self._ensure_key()
            self._ensure_network()
            _parallel(lambda h: self._prepare_host(h, bases[h.image]), list(plan.hosts.values()))
            for h in plan.hosts.values():
                if not self.is_running(h.name):
                    self._start(h)
            self._save()
            self.write_inventory()
            self.failed_units = self._wait_ready(list(plan.hosts.values()), timeout)
        log(f"lab {self.name} ready in {time.monotonic() - started:.1f}s")
        return self

    def _ensure_key(self) -> None:
        if not self.key_path.exists() or not self.key_path.with_suffix(".pub").exists():
            self.key_path.unlink(missing_ok=True)
            self.key_path.with_suffix(".pub").unlink(missing_ok=True)
            comment = f"clusterlink-lab-{self.name}"
            run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    comment,
                    "-f",
                    str(self.key_path),
                ]
            )

    def _ensure_network(self) -> None:
        assert self._state is not None
        if self._state.topology == "flat":
            _reclaim_stale_holder(f"{FLAT_NET}.1")
            net.ensure_bridge(f"clb{self.tag}s0", f"{FLAT_NET}.1/24")
        else:
            self._ensure_router()
        self._ensure_root_filter()
        for h in self._state.hosts.values():
            net.ensure_netns(h.netns)
            net.ensure_veth(h.veth, h.netns, "eth0")
            net.attach(h.veth, h.bridge)
            net.configure_inner(h.netns, "eth0", [f"{h.address}/24"], h.gateway)

    def _ensure_router(self) -> None:
        assert self._state is not None
        r = self.router_netns
        net.check_address_free(f"{PUBLIC_NET}.1", self.public_veth)
        net.ensure_netns(r)
        net.sysctl(r, "net.ipv4.ip_forward", "1")
        for s in self._state.sites.values():
            net.ensure_bridge(s.bridge, f"{s.controller_address}/24")
            net.ensure_veth(s.router_veth, r, f"priv{s.index}")
            net.attach(s.router_veth, s.bridge)
            net.configure_inner(r, f"priv{s.index}", [f"{s.router_address}/24"], None)
        net.ensure_veth(self.public_veth, r, "pub0")
        run(["ip", "addr", "replace", f"{PUBLIC_NET}.1/24", "dev", self.public_veth])
        net.set_link(self.public_veth, True)
        publics = [f"{s.public_address}/24" for s in self._state.sites.values()]
        net.configure_inner(r, "pub0", publics, None)
        net.nft_replace_table("ip", ROUTER_TABLE, self._router_rules(), netns=r)

    def _router_rules(self) -> str:
        """NAT and filter of the cloud router: only the peer port of each site is reachable
        (of no outbound-only site: nothing is DNATed to it, so the forward chain drops all)."""
        assert self._state is not None
        port = self._state.public_port
        dnat, snat = [], []
        for s in self._state.sites.values():
            first = self._state.hosts[s.first_host].address
            if not s.outbound_only:
                dnat.append(f"ip daddr {s.public_address} tcp dport {port} dnat to {first}")
            snat.append(f"ip saddr {s.subnet} snat to {s.public_address}")
        nl = "\n    "
        return f"""table ip {ROUTER_TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    {nl.join(dnat)}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    {nl.join(snat)}
  }}
  chain input {{
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
    iifname "priv*" icmp type echo-request accept
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    ct status dnat accept
    iifname "priv*" oifname "pub0" accept
  }}
}}"""

    def _ensure_root_filter(self) -> None:
        """Explicitly stop the root namespace from routing into or out of the lab's links."""
        assert self._state is not None
        devs = sorted({h.bridge for h in self._state.hosts.values()})
        if self._state.topology == "cloud":
            devs.append(self.public_veth)
        rules = []
        for d in devs:
            rules.append(f'iifname "{d}" oifname != "{d}" drop')
            rules.append(f'oifname "{d}" iifname != "{d}" drop')
        # The controller's management path into an outbound-only site is SSH (and ping) only.
        mgmt = []
        for s in self._state.sites.values():
            if s.outbound_only:
                o = f'oifname "{s.bridge}" meta nfproto ipv4 ct state new'
                mgmt += [f"{o} tcp dport 22 accept", f"{o} icmp type echo-request accept"]
                mgmt.append(f"{o} drop")
        body = "\n    ".join(rules)
        out = "\n    ".join(mgmt)
        net.nft_replace_table(
            "inet",
            self.nft_table,
            f"""table inet {self.nft_table} {{
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    {body}
  }}
  chain output {{
    type filter hook output priority filter - 10; policy accept;
    {out}
  }}
}}""",
        )

    def _prepare_host(self, h: Host, base: Path) -> None:
        d = self._host_dir(h.name)
        root = self._root(h.name)
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        if not _is_mounted(root):
            opts = f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'}"
            run(["mount", "-t", "overlay", "clusterlink-lab", "-o", opts, str(root)])
        etc = root / "etc"
        (etc / "hostname").write_text(h.name + "\n")
        (etc / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{h.name}\n{h.address}\t{h.name}\n"
            "::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        machine_id = etc / "machine-id"
        if not machine_id.exists() or not machine_id.read_text().strip():
            machine_id.write_text(secrets.token_hex(16) + "\n")
        for kind in ("ed25519", "ecdsa"):  # the image's sshd config names exactly these
            key = etc / f"ssh/ssh_host_{kind}_key"
            if not key.exists() or not key.with_suffix(".pub").exists():
                key.unlink(missing_ok=True)
                key.with_suffix(".pub").unlink(missing_ok=True)
                run(
                    [
                        "ssh-keygen",
                        "-q",
                        "-t",
                        kind,
                        "-N",
                        "",
                        "-C",
                        f"root@{h.name}",
                        "-f",
                        str(key),
                    ]
                )
        # Concurrent commands are sessions on one SSH connection per host (tests.lab.remote).
        (etc / "ssh/sshd_config.d/clusterlink-lab-sessions.conf").write_text(
            f"MaxSessions {MAX_SESSIONS}\n"
        )
        dot_ssh = root / "root/.ssh"
        dot_ssh.mkdir(mode=0o700, exist_ok=True)
        keys = dot_ssh / "authorized_keys"
        keys.write_text(self.key_path.with_suffix(".pub").read_text())
        keys.chmod(0o600)

    # ----- containers ------------------------------------------------------------------
    def is_running(self, host: str) -> bool:
        """True if the host's recorded nspawn process is alive."""
        h = self._host(host)
        if h.pid is None:
            return False
        _reap(h.pid)
        info = _proc_start(h.pid)
        # (pid, start time) identifies the process; cmdline can read empty while it forks.
        return info is not None and info[0] not in ("Z", "X") and info[1] == h.pid_start

    def _start(self, h: Host) -> None:
        logfile = self._host_dir(h.name) / "nspawn.log"
        cmd = [
            "systemd-nspawn",
            "-D",
            str(self._root(h.name)),
            "--boot",
            f"--network-namespace-path={net.NETNS_DIR / h.netns}",
            "--register=no",
            "--keep-unit",
            "-M",
            h.machine,
        ]
        cgroups = _cgroup_dirs(h.machine)
        # A container whose nspawn was killed keeps running orphaned (its systemd, sshd and
        # the sessions on it): end what is left of it, so the new boot is the only one.
        for d in cgroups:
            for pid in _cgroup_procs(d):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for d in cgroups:
            deadline = time.monotonic() + 10
            while _cgroup_procs(d) and time.monotonic() < deadline:
                time.sleep(0.1)
            _remove_cgroup(d)  # stale sub-cgroups of a previous boot
            d.mkdir(parents=True, exist_ok=True)

        def enter_cgroups() -> None:  # runs in the child, before exec
            for d in cgroups:
                (d / "cgroup.procs").write_text("0")

        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=enter_cgroups,
            )
        _CHILDREN[proc.pid] = proc
        h.pid = proc.pid
        info = _proc_start(proc.pid)
        h.pid_start = info[1] if info else None
        log(f"{self.name}/{h.name}: started nspawn pid {proc.pid}")

    def _wait_ready(self, hosts: Sequence[Host], timeout: float) -> dict[str, list[str]]:
        """Wait until every host's systemd reports running/degraded; return failed units."""
        results = _parallel(lambda h: self._wait_one(h, timeout), hosts)
        failed = {h.name: units for h, units in zip(hosts, results, strict=True) if units}
        for name, units in failed.items():
            log(f"{self.name}/{name}: degraded, failed units: {', '.join(units)}")
        return failed

    def _wait_one(self, h: Host, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        state = "unreachable"
        while time.monotonic() < deadline:
            if not self.is_running(h.name):
                tail = (self._host_dir(h.name) / "nspawn.log").read_text(errors="replace")
                raise LabError(f"{self.name}/{h.name}: nspawn exited:\n{tail[-2000:]}")
            proc = self.run(h.name, "systemctl is-system-running", timeout=10)
            state = proc.stdout.strip() or "unreachable"
            if state == "running":
                return []
            if state == "degraded":
                out = self.run(h.name, "systemctl --failed --plain --no-legend", timeout=10)
                return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
            if state in ("maintenance", "stopping", "offline"):
                break
            time.sleep(0.5)
        raise LabError(f"{self.name}/{h.name}: not ready after {timeout}s (state: {state})")

    def is_stale(self) -> bool:
        """True if the process that created the lab is gone and none of its hosts runs
        (what a killed test run leaves behind); such a lab blocks its subnet for nothing."""
        if self._state is None:
            return False
        owner = self._state.owner
        if owner is not None:
            info = _proc_start(owner[0])
            if info is not None and info[0] not in ("Z", "X") and info[1] == owner[1]:
                return False
        return not any(self.is_running(h) for h in self.hosts)

    def _stop_pids(self, pids: Mapping[int, int | None], grace: float = 15) -> None:
        """SIGTERM (orderly container shutdown), then SIGKILL, the given nspawn PIDs."""

        def alive(pid: int, start: int | None) -> bool:
            _reap(pid)
            info = _proc_start(pid)
            if info is None or info[0] in ("Z", "X"):
                return False
            return start is None or info[1] == start

        def wait(deadline: float) -> bool:
            while time.monotonic() < deadline:
                if not any(alive(p, s) for p, s in pids.items()):
                    return True
                time.sleep(0.2)
            return False

        for sig, budget in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            for pid, start in pids.items():
                if alive(pid, start):
                    os.kill(pid, sig)
            if wait(time.monotonic() + budget):
                return
        raise LabError(f"nspawn processes did not exit: {sorted(pids)}")

    # ----- public operations on hosts ----------------------------------------------------
    def _target(self, host: str) -> remote.Target:
        h = self._host(host)
        return remote.Target(h.address, self.key_path, f"{self.name}/{host}")

    def ssh_argv(self, host: str, command: str | Sequence[str] | None = None) -> list[str]:
        """The ssh command line that runs ``command`` as root on ``host``."""
        return self._target(host).ssh_argv(
            None if command is None else remote.command_text(command)
        )

    def start_command(
        self, host: str, command: str | Sequence[str], *, input: str | None = None
    ) -> remote.RemoteCommand:
        """Start a shell command as root on a host and return at once: a handle to stream
        its stdout (``lines()``), ``wait(timeout)`` for it or ``stop()`` it. Commands on one or
        several hosts run concurrently (over one persistent SSH connection per host)."""
        return remote.start(self._target(host), command, input)

    async def arun(
        self,
        host: str,
        command: str | Sequence[str],
        *,
        timeout: float | None = 120,  # noqa: ASYNC109 - stops the remote command: rc 124
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``run`` for coroutines (any event loop): ``await lab.arun("a", "hostname")``."""
        return await remote.arun(self._target(host), command, input, timeout)

    def run(
        self,
        host: str,
        command: str | Sequence[str],
        *,
        check: bool = False,
        timeout: float | None = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root on a host over SSH; output is captured as text.

        Return code 124 if ``timeout`` stopped it, 255 if the host could not be reached or
        the connection was lost; ``check`` raises LabError instead of returning non-zero."""
        proc = self.start_command(host, command, input=input).wait(timeout)
        if check and proc.returncode == remote.TIMED_OUT and "[lab] timed out" in proc.stderr:
            raise LabError(f"{host}: timed out after {timeout}s: {command}")
        if check and proc.returncode != 0:
            raise LabError(f"{host}: rc={proc.returncode}: {command}\n{proc.stderr.strip()}")
        return proc

    def put(self, host: str, src: str | Path, dest: str) -> None:
        """Copy a local file or directory to ``dest`` on a host (like ``scp -r``)."""
        try:
            remote.put(self._target(host), src, dest)
        except Exception as exc:
            raise LabError(f"{host}: copying {src} to {dest} failed: {exc}") from exc

    def link_down(self, host: str) -> None:
        """Cut the host's network cable (its veth goes down; the host keeps its addresses)."""
        net.set_link(self._host(host).veth, False)

    def link_up(self, host: str) -> None:
        """Plug the host's network cable back in."""
        h = self._host(host)
        net.set_link(h.veth, True)
        run(["ip", "-n", h.netns, "route", "replace", "default", "via", h.gateway], check=False)

    def poweroff(self, host: str, timeout: float = 30) -> None:
        """Shut the host down cleanly (``systemctl poweroff``); forced if it takes too long."""
        h = self._host(host)
        with self._locked():
            if not self.is_running(host):
                return
            assert h.pid is not None
            self.run(host, "systemctl poweroff", timeout=10)
            remote.forget(lambda t: t == self._target(host))
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.is_running(host):
                time.sleep(0.2)
            if self.is_running(host):
                self._stop_pids({h.pid: h.pid_start})
            h.pid = h.pid_start = None
            self._save()

    def start(self, host: str, timeout: float = 120) -> list[str]:
        """Boot a powered-off host and wait until it is up; return its failed units."""
        h = self._host(host)
        with self._locked():
            if not self.is_running(host):
                self._start(h)
                self._save()
        failed = self._wait_ready([h], timeout).get(host, [])
        self.failed_units[host] = failed
        return failed

    # ----- destroy -----------------------------------------------------------------------
    def destroy(self) -> None:
        """Remove everything the lab created; succeeds if the lab does not exist."""
        if self.dir.exists():
            with self._locked():
                self._load()
                self._teardown()
        else:
            self._teardown()

    def _teardown(self) -> None:
        started = time.monotonic()
        remote.forget(lambda t: t.key_path == self.key_path)
        pids: dict[int, int | None] = {}
        for h in self.hosts.values():
            if h.pid is not None and self.is_running(h.name):
                pids[h.pid] = h.pid_start
        # Also any nspawn still booted from this lab's dirs (e.g. state.json lost mid-create).
        prefix = str(self.dir / "hosts") + "/"
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) not in pids:
                root = _nspawn_root(int(entry))
                if root and root.startswith(prefix):
                    pids[int(entry)] = None
        if pids:
            self._stop_pids(pids)
        cgroups = [d for m in _cgroup_mounts() for d in m.glob(f"clusterlink-lab/cl.{self.name}.*")]
        for d in cgroups:
            for pid in _cgroup_procs(d):  # only processes of this lab's containers
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for d in cgroups:
            deadline = time.monotonic() + 5
            while _cgroup_procs(d) and time.monotonic() < deadline:
                time.sleep(0.1)
            _remove_cgroup(d)
        prefix_ns = f"cl.{self.name}."
        for ns in net.netns_list():
            if ns.startswith(prefix_ns) or ns == self.router_netns:
                net.delete_netns(ns)
        for name in net.links():
            if name.startswith(("clb", "clv", "clr", "clp")) and name[3:9] == self.tag:
                net.delete_link(name)
        net.nft_delete_table("inet", self.nft_table)
        for h in self.hosts.values():
            for sub in ("propagate", "unix-export"):
                leftover = Path("/run/systemd/nspawn") / sub / h.machine
                if leftover.is_dir():
                    remove_tree(leftover)
        remove_tree(self.dir)  # unmounts the overlays first
        existed = self._state is not None
        self._state = None
        if existed or pids:
            log(f"lab {self.name} destroyed in {time.monotonic() - started:.1f}s")

    # ----- descriptions ----------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """A JSON-able description of the lab."""
        if self._state is None:
            return {"name": self.name, "exists": self.exists(), "hosts": {}}
        return {
            "name": self.name,
            "exists": True,
            "topology": self._state.topology,
            "state_dir": str(self.dir),
            "key": str(self.key_path),
            "inventory": str(self.inventory_path),
            "public_port": self._state.public_port if self._state.topology == "cloud" else None,
            "router_netns": self.router_netns if self._state.topology == "cloud" else None,
            "hosts": {
                h.name: {
                    "address": h.address,
                    "image": h.image,
                    "site": h.site,
                    "public_address": self.sites[h.site].public_address if h.site else None,
                    "outbound_only": bool(h.site and self.sites[h.site].outbound_only),
                    "gateway": h.gateway,
                    "netns": h.netns,
                    "veth": h.veth,
                    "bridge": h.bridge,
                    "pid": h.pid,
                    "running": self.is_running(h.name),
                    "root": str(self._root(h.name)),
                }
                for h in self._state.hosts.values()
            },
            "sites": {s.name: asdict(s) for s in self._state.sites.values()},
        }

    def write_inventory(self) -> Path:
        """Write ``inventory.yml`` (group ``clusterlink_gateways``) and return its path."""
        assert self._state is not None
        common = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
        lines = [
            "# Written by `python3 -m tests.lab create`; regenerated on every create.",
            "all:",
            "  children:",
            "    clusterlink_gateways:",
            "      hosts:",
        ]
        for h in self._state.hosts.values():
            hv: dict[str, object] = {
                "ansible_host": h.address,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key_path),
                "ansible_ssh_common_args": common,
                "ansible_python_interpreter": "/usr/bin/python3",
            }
            if h.site:
                hv["clusterlink_peer_name"] = h.site
                if self.sites[h.site].outbound_only:
                    hv["clusterlink_inbound"] = False  # nothing reaches it: others never dial
                else:
                    hv["clusterlink_advertise_address"] = self.sites[h.site].public_address
                if self._state.public_port != 443:
                    hv["clusterlink_port"] = self._state.public_port
            lines.append(f"        {h.name}:")
            lines += [f"          {k}: {json.dumps(v)}" for k, v in hv.items()]
        self.inventory_path.write_text("\n".join(lines) + "\n")
        return self.inventory_path
