# Copyright: Contributors to the clusterlink.fabric collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""ExecStartPost of clusterlink-gateway: wait until the admin API answers GET /readyz with 200.

Usage: python wait_ready.py SOCKET TIMEOUT_SECONDS [MAINPID]. Exit 0 when ready; 1 on timeout
or as soon as the daemon (MAINPID) is gone. Only the standard library is used (it runs with
the gateway's virtualenv Python, inside the unit's sandbox).
"""

import http.client
import os
import socket
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def ready(path):
    conn = UnixConnection(path, 2.0)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def alive(pid):
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv):
    path, timeout = argv[1], float(argv[2])
    pid = int(argv[3]) if len(argv) > 3 and argv[3].isdigit() else None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready(path):
            return 0
        if not alive(pid):
            print(
                f"clusterlink-gateway: the daemon (pid {pid}) exited before it was ready",
                file=sys.stderr,
            )
            return 1
        time.sleep(0.2)
    print(f"clusterlink-gateway: {path} not ready after {timeout:g}s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
