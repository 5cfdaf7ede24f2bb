"""Processes the harness starts, and what /proc says about them (CPU time, RSS, listeners).

Every process is started in its own session and remembered; ``Procs.stop_all`` ends them by
PID (SIGTERM, then SIGKILL), which ``run.py`` calls from a ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something broke: a tool is missing, a process died, a tunnel carried no traffic."""


class Procs:
    """Starts processes (logs under ``logdir``) and stops every one of them by PID."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: dict[int, tuple[str, subprocess.Popen[bytes]]] = {}

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        self.logdir.mkdir(parents=True, exist_ok=True)
        log = open(self.logdir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        self.running[proc.pid] = (name, proc)
        return proc

    def log_tail(self, name: str, lines: int = 20) -> str:
        try:
            text = (self.logdir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self, *procs: subprocess.Popen[bytes]) -> None:
        for proc in procs:
            if proc.poll() is not None:
                name = self.running.get(proc.pid, ("?", proc))[0]
                raise BenchError(
                    f"{name} (pid {proc.pid}) exited with {proc.returncode}:\n"
                    + self.log_tail(name)
                )

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
        """SIGTERM to the process (and its own process group, i.e. its workers), then KILL."""
        self.running.pop(proc.pid, None)
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        # children left behind in the group started for this process
        _signal_group(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for _, proc in reversed(list(self.running.values())):
            self.stop(proc)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


# -- /proc readers ---------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


@dataclass(frozen=True)
class CpuTimes:
    user: float
    system: float

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.user - other.user, self.system - other.system)


def cpu_times(pids: Iterable[int]) -> dict[int, CpuTimes]:
    """utime and stime (all threads) of each process, in seconds; gone processes are left out."""
    out = {}
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        out[pid] = CpuTimes(int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK)
    return out


class CpuMeter:
    """CPU used by a set of processes (and their descendants) between start() and stop()."""

    def __init__(self, roots: Sequence[int]) -> None:
        self.roots = list(roots)
        self.pids: list[int] = []
        self._before: dict[int, CpuTimes] = {}
        self._machine_before: tuple[int, int] = (0, 0)
        self.used = CpuTimes(0.0, 0.0)
        self.machine_busy = 0.0  # fraction of all CPUs busy during the run

    def start(self) -> None:
        self.pids = [p for root in self.roots for p in descendants(root)]
        self._before = cpu_times(self.pids)
        self._machine_before = machine_jiffies()

    def stop(self) -> CpuTimes:
        after = cpu_times(self.pids)
        user = sum(after[p].user - self._before[p].user for p in after if p in self._before)
        system = sum(after[p].system - self._before[p].system for p in after if p in self._before)
        self.used = CpuTimes(user, system)
        busy0, total0 = self._machine_before
        busy1, total1 = machine_jiffies()
        self.machine_busy = (busy1 - busy0) / max(1, total1 - total0)
        return self.used


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(values[:8])  # guest time is already in user
    idle = values[3] + values[4]
    return total - idle, total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_rss_kib(pid: int) -> int:
    return sum(rss_kib(p) for p in descendants(pid))


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def listening(port: int) -> bool:
    """Is something listening on TCP ``port`` (any IPv4/IPv6 address)?"""
    return listeners(port) > 0


def listeners(port: int) -> int:
    """How many sockets listen on ``port`` (several with SO_REUSEPORT workers)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def wait_listening(
    procs: Procs,
    ports: Iterable[int],
    watch: Sequence[subprocess.Popen[bytes]],
    timeout: float = 20.0,
) -> None:
    """Wait until every port has a listener; fail early when a watched process dies."""
    pending = set(ports)
    deadline = time.monotonic() + timeout
    while pending:
        procs.check_alive(*watch)
        pending = {p for p in pending if not listening(p)}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"nothing listens on port(s) {sorted(pending)} after {timeout} s")
        time.sleep(0.05)
