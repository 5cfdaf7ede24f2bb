"""The cached Debian base image every lab host boots from (read-only overlay lower layer)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from .util import LabError, log, remove_tree

SUITE = "bookworm"  # the default image
# Debian releases a lab host can boot (``Lab.create(images={host: suite})``).
SUITES = ("bookworm", "trixie", "bullseye")
VARIANT = "minbase"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "python3",
    "python3-venv",
    "iproute2",
    "dbus",
    "curl",
    "ca-certificates",
    "iperf3",
)
# More packages for one release. Debian 13's hosts run systemd-resolved (enabled by its package,
# /etc/resolv.conf on its stub), as many real hosts do: the gateway role's split-DNS drop-in is
# proven there, the /etc/hosts way on the others.
SUITE_PACKAGES = {"trixie": ("systemd-resolved",)}


def suite_packages(suite: str) -> tuple[str, ...]:
    """The packages an image of ``suite`` is built with."""
    return PACKAGES + SUITE_PACKAGES.get(suite, ())


# Bump when the customisation below changes, so cached images are rebuilt.
CUSTOMISATION_VERSION = 2
# Units that only make sense on real hardware or wait for things a container never has.
MASKED_UNITS = (
    "systemd-networkd-wait-online.service",
    "systemd-timesyncd.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "iperf3.service",
)
SSHD_CONFIG = """\
# Written by the ClusterLink lab image builder.
PermitRootLogin prohibit-password
# Per-host keys are generated at create time; RSA keygen is too slow for many hosts at once.
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""
# OpenSSH before 8.7 (bullseye) rejects KbdInteractiveAuthentication; its name there differs.
_OLD_SSHD = {"bullseye"}
SOURCES_FILE = Path("/etc/apt/sources.list.d/debian.sources")


def cache_dir() -> Path:
    """Directory holding cached images (env ``CLUSTERLINK_LAB_CACHE``)."""
    return Path(os.environ.get("CLUSTERLINK_LAB_CACHE", "/var/cache/clusterlink-lab"))


def check_suite(suite: str) -> str:
    """Return ``suite`` if the lab can build it, else raise a LabError naming the choices."""
    if suite not in SUITES:
        raise LabError(f"unknown image {suite!r} (want one of {', '.join(SUITES)})")
    return suite


def image_path(suite: str = SUITE) -> Path:
    """Path of the cached base image of Debian ``suite``."""
    return cache_dir() / f"base-{check_suite(suite)}"


def _stamp_path(image: Path) -> Path:
    return image.with_name(image.name + ".stamp")


def _wanted_stamp(packages: tuple[str, ...], suite: str = SUITE) -> dict[str, object]:
    return {
        "suite": suite,
        "variant": VARIANT,
        "packages": sorted(packages),
        "customisation": CUSTOMISATION_VERSION,
    }


def mirror() -> str:
    """The first ``URIs:`` entry of the machine's Debian sources (never hard-coded)."""
    try:
        text = SOURCES_FILE.read_text()
    except OSError as exc:
        raise LabError(f"cannot read {SOURCES_FILE}: {exc}") from exc
    for line in text.splitlines():
        if line.strip().startswith("URIs:"):
            uris = line.split(":", 1)[1].split()
            if uris:
                return uris[0]
    raise LabError(f"no URIs: line in {SOURCES_FILE}")


def image_is_current(packages: tuple[str, ...] | None = None, suite: str = SUITE) -> bool:
    """True if the cached image of ``suite`` exists and was built with the same recipe."""
    packages = packages or suite_packages(suite)
    image = image_path(suite)
    stamp = _stamp_path(image)
    if not image.is_dir() or not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()) == _wanted_stamp(packages, suite)
    except (OSError, ValueError):
        return False


def _image_in_use(image: Path) -> bool:
    needle = f"lowerdir={image}"
    with open("/proc/self/mountinfo") as f:
        return any(needle in line for line in f)


def _build_prefix(suite: str) -> str:
    # bookworm keeps the historical names so older checkouts sharing the cache agree.
    return ".build-" if suite == SUITE else f".build.{suite}-"


def ensure_image(
    packages: tuple[str, ...] | None = None, *, rebuild: bool = False, suite: str = SUITE
) -> Path:
    """Return the cached base image of ``suite``, building it first if missing or stale.

    Each release has its own image, stamp, lock and build directories, so images of different
    releases build independently (and in parallel)."""
    packages = packages or suite_packages(suite)
    image = image_path(suite)
    if not rebuild and image_is_current(packages, suite):
        return image
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    lock_name = ".lock" if suite == SUITE else f".lock.{suite}"
    prefix = _build_prefix(suite)
    with open(root / lock_name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not rebuild and image_is_current(packages, suite):
            return image
        if image.exists() and _image_in_use(image):
            raise LabError(f"{image} is stale but mounted by a running lab; destroy labs first")
        for leftover in root.glob(f"{prefix}*"):
            if leftover.is_dir():
                remove_tree(leftover)
            else:
                leftover.unlink()
        build = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        build.chmod(0o755)  # becomes every host's "/"
        try:
            _debootstrap(build, packages, suite)
            _customise(build, suite)
            _stamp_path(image).unlink(missing_ok=True)
            if image.exists():
                old = Path(tempfile.mkdtemp(prefix=f"{prefix}old-", dir=root))
                image.rename(old / "image")
                remove_tree(old)
            build.rename(image)
            stamp = _wanted_stamp(packages, suite)
            _stamp_path(image).write_text(json.dumps(stamp, indent=1) + "\n")
        finally:
            remove_tree(build)
    return image


def _debootstrap(target: Path, packages: tuple[str, ...], suite: str) -> None:
    cmd = [
        "debootstrap",
        f"--variant={VARIANT}",
        f"--include={','.join(packages)}",
        suite,
        str(target),
        mirror(),
    ]
    log(f"building base image: {' '.join(cmd)}")
    started = time.monotonic()
    logfile = target.with_name(target.name + ".log")
    with open(logfile, "w") as out:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out).returncode
    if rc != 0:
        tail = logfile.read_text(errors="replace").splitlines()[-20:]
        raise LabError(f"debootstrap failed (rc={rc}):\n" + "\n".join(tail))
    logfile.unlink(missing_ok=True)
    log(f"debootstrap done in {time.monotonic() - started:.0f}s")


def _customise(root: Path, suite: str = SUITE) -> None:
    """One-time changes shared by every host; per-host identity is added at create time."""
    etc = root / "etc"
    # Per-host identity (machine-id, SSH host keys) is generated when a host is created.
    (etc / "machine-id").unlink(missing_ok=True)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "ssh/sshd_config.d").mkdir(exist_ok=True)
    sshd = SSHD_CONFIG
    if suite in _OLD_SSHD:
        sshd = sshd.replace("KbdInteractiveAuthentication", "ChallengeResponseAuthentication")
    (etc / "ssh/sshd_config.d/clusterlink-lab.conf").write_text(sshd)
    wants = etc / "systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    ssh_link = wants / "ssh.service"
    if not ssh_link.is_symlink():
        ssh_link.symlink_to("/lib/systemd/system/ssh.service")
    for unit in MASKED_UNITS:
        masked = etc / "systemd/system" / unit
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    dot_ssh = root / "root/.ssh"
    dot_ssh.mkdir(mode=0o700, exist_ok=True)
    # Keep the journal in memory: hosts are short-lived and disks are shared.
    (etc / "systemd/journald.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/journald.conf.d/clusterlink-lab.conf").write_text(
        "[Journal]\nStorage=volatile\n"
    )
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
