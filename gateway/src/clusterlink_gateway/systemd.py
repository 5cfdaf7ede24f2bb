"""systemd integration: readiness notification, the file descriptor store, inherited sockets.

Under systemd (``Type=notify``, ``FileDescriptorStoreMax=``) every data-plane listening socket
is handed to the service manager with ``FDSTORE=1`` and a name (``peer``, ``import-<name>``).
On the next start systemd passes them back (``LISTEN_FDS``/``LISTEN_FDNAMES``); the kernel keeps
queueing connections on them while no process accepts, so a restart refuses no client.
Without ``$NOTIFY_SOCKET`` and ``$LISTEN_FDS`` (tests, manual runs) every call here is a no-op
and sockets are bound as usual.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

log = logging.getLogger("clusterlink.systemd")

LISTEN_FDS_START = 3

_inherited: dict[str, list[socket.socket]] | None = None


def notify(*fields: str, fds: list[int] | None = None) -> bool:
    """Send ``fields`` (``KEY=value``) to ``$NOTIFY_SOCKET``, with ``fds`` attached; False when
    not run by systemd or the message could not be sent."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    address = "\0" + path[1:] if path.startswith("@") else path
    message = "\n".join(fields).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            if fds:
                socket.send_fds(sock, [message], fds)
            else:
                sock.send(message)
        except OSError as exc:
            log.warning("cannot notify systemd", extra={"fields": fields, "error": str(exc)})
            return False
    return True


def _take_inherited() -> dict[str, list[socket.socket]]:
    """The sockets passed in ``LISTEN_FDS`` (read once; the variables are then unset)."""
    global _inherited
    if _inherited is not None:
        return _inherited
    _inherited = {}
    pid, count = os.environ.pop("LISTEN_PID", ""), os.environ.pop("LISTEN_FDS", "")
    names = os.environ.pop("LISTEN_FDNAMES", "").split(":")
    if not count.isdigit() or pid != str(os.getpid()):
        return _inherited
    for i in range(int(count)):
        fd = LISTEN_FDS_START + i
        name = names[i] if i < len(names) else "unknown"
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        sock.set_inheritable(False)
        _inherited.setdefault(name, []).append(sock)
    return _inherited


def _listens_on(sock: socket.socket, host: str, port: int) -> bool:
    try:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        bound = sock.getsockname()
    except OSError:
        return False
    return ipaddress.ip_address(bound[0]) == ipaddress.ip_address(host) and bound[1] == port


def forget(name: str) -> None:
    """Drop ``name`` from systemd's store (an import deleted or moved to another address)."""
    notify("FDSTOREREMOVE=1", f"FDNAME={name}")


def listening_socket(
    name: str, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024
) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port`` for ``name``: the one inherited from
    the previous process when it has this address, else a new one (kept in systemd's store).
    OSError when the address cannot be bound."""
    for sock in _take_inherited().pop(name, []):
        if _listens_on(sock, host, port):
            sock.setblocking(False)
            log.info("listening socket inherited", extra={"socket": name, "port": port})
            return sock
        sock.close()
        forget(name)
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    notify("FDSTORE=1", f"FDNAME={name}", fds=[sock.fileno()])
    return sock


def close_unclaimed() -> None:
    """Close inherited sockets nobody asked for and drop them from the store."""
    for name, socks in _take_inherited().items():
        for sock in socks:
            sock.close()
        forget(name)
        log.info("inherited socket no longer configured; closed", extra={"socket": name})
    _take_inherited().clear()
