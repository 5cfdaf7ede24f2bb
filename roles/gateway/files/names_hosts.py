# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""clusterlink-names.service: copy the gateway's import names into a managed /etc/hosts block.

Usage: python names_hosts.py SOURCE HOSTS_FILE. SOURCE is the gateway's names file
(``dns.hosts_file``, lines ``<address>\\t<import>.<zone>``, rewritten by the gateway whenever its
imports change; clusterlink-names.path starts this service then). The block between
``# BEGIN clusterlink.fabric import names`` and ``# END clusterlink.fabric import names`` is
replaced (or appended); nothing else in HOSTS_FILE changes. A missing SOURCE (the gateway is
stopped) changes nothing. Lines of SOURCE that are not an address and a name are skipped.
Only the standard library is used. Exit 0 when the block is current.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import sys
import tempfile

BEGIN = "# BEGIN clusterlink.fabric import names"
END = "# END clusterlink.fabric import names"
NAME = re.compile(r"^[A-Za-z0-9_]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9])?$")


def entries(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2 or not NAME.match(parts[1]):
            continue
        try:
            ipaddress.ip_address(parts[0])
        except ValueError:
            continue
        out.append(f"{parts[0]}\t{parts[1]}")
    return out


def with_block(hosts: str, lines: list[str]) -> str:
    """``hosts`` with the managed block holding ``lines`` (kept in place when present)."""
    block = [BEGIN, *lines, END]
    current = hosts.splitlines()
    if not lines and BEGIN not in current:
        return hosts  # nothing to list, no block yet
    if BEGIN in current and END in current[current.index(BEGIN) :]:
        start = current.index(BEGIN)
        end = current.index(END, start)
        new = current[:start] + block + current[end + 1 :]
    else:
        new = current + block
    return "\n".join(new) + "\n"


def replace(path: str, text: str) -> None:
    """Atomically where possible; in place where the file is a mount point (containers)."""
    try:
        info = os.stat(path)
        mode, uid, gid = info.st_mode & 0o7777, info.st_uid, info.st_gid
    except FileNotFoundError:  # a minimal container may have none: made as usual
        mode, uid, gid = 0o644, 0, 0
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".hosts.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        if (uid, gid) != (os.getuid(), os.getgid()):
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except OSError as exc:
        os.unlink(tmp)
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        with open(path, "w") as handle:
            handle.write(text)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, hosts_path = argv
    try:
        with open(source) as handle:
            lines = entries(handle.read())
    except FileNotFoundError:
        return 0
    try:
        with open(hosts_path) as handle:
            hosts = handle.read()
    except FileNotFoundError:
        hosts = ""
    new = with_block(hosts, lines)
    if new != hosts:
        replace(hosts_path, new)
        print(f"{hosts_path}: {len(lines)} import names")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
