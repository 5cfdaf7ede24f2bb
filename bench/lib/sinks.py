"""The services behind the tunnels, running for the whole session: an iperf3 server, nginx
answering ``return 200`` (1 worker, access_log off, as perf-anchors), a sink that holds
idle connections, and an echo server for the ping-pong case."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from .proc import Procs, wait_listening

NGINX_CONF = """\
worker_processes 1; daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 75s;
  client_body_temp_path {root}/client_body; proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi; uwsgi_temp_path {root}/uwsgi; scgi_temp_path {root}/scgi;
  server {{ listen 127.0.0.1:{port} backlog=4096;
           location / {{ default_type text/plain; return 200 "hello from nginx\\n"; }} }}
}}
"""


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Sinks:
    iperf: int
    http: int
    hold: int
    echo: int = 0

    def port(self, kind: str) -> int:
        return int(getattr(self, kind))


def start_sinks(procs: Procs, workdir: Path) -> Sinks:
    sinks = Sinks(iperf=free_port(), http=free_port(), hold=free_port(), echo=free_port())
    iperf = procs.spawn(
        "iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(sinks.iperf)]
    )
    root = workdir / "nginx"
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=sinks.http))
    nginx = procs.spawn(
        "nginx", ["nginx", "-p", str(root), "-e", str(root / "error.log"), "-c", str(conf)]
    )
    hold = procs.spawn(
        "holdsink", [sys.executable, str(Path(__file__).with_name("holdsink.py")), str(sinks.hold)]
    )
    echo = procs.spawn(
        "echosink", [sys.executable, str(Path(__file__).with_name("echosink.py")), str(sinks.echo)]
    )
    wait_listening(
        procs, [sinks.iperf, sinks.http, sinks.hold, sinks.echo], [iperf, nginx, hold, echo]
    )
    return sinks
