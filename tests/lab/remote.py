"""Commands on lab hosts over SSH: one persistent connection per host, commands in parallel.

With ``asyncssh`` importable (the project's ``.venv``), every host has one SSH connection,
opened on first use and kept; each command is a session (channel) on it, so a command costs a
round trip instead of an ``ssh`` process and a handshake. A connection that went away (the
host was powered off or restarted, keepalives failed while its link was down) is replaced by a
new one the next time a command opens; a command that had not started yet is retried once on
the new connection, a running one is reported lost (exit status 255, as ``ssh`` does).

The connections live on one asyncio event loop in a daemon thread, so the synchronous API
(``RemoteCommand``) works from any thread and the asynchronous one (``Remote.arun``) from any
event loop.

Without ``asyncssh`` (the system ``python3`` running ``python3 -m tests.lab``), or with
``CLUSTERLINK_LAB_SSH=binary``, each command is one ``ssh`` process, as before; the API is the
same.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import queue
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import asyncssh
except ImportError:  # the system python3: stdlib only
    asyncssh = None

TIMED_OUT = 124  # returncode of a command stopped by its timeout (like timeout(1))
LOST = 255  # returncode when the connection failed or was lost (like ssh(1))
CONNECT_TIMEOUT = 5  # seconds, as the ssh options' ConnectTimeout
OPEN_TIMEOUT = 10  # seconds to open a session on a connection before it is deemed dead
KEEPALIVE = (5, 3)  # interval (s), misses: a silent connection is dropped after ~15 s
STOP_GRACE = 3  # seconds a stopped command gets to exit after SIGTERM before SIGKILL
PID_MARK = "__lab_pid__="  # first stderr line of every command: its shell's PID (not shown)
SSH_OPTS = ("StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null", "LogLevel=ERROR")
SSH_OPTS += ("BatchMode=yes", f"ConnectTimeout={CONNECT_TIMEOUT}")
SSH_OPTIONS = ("-F", "/dev/null", *(arg for opt in SSH_OPTS for arg in ("-o", opt)))

if asyncssh is not None:
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    _CONN_ERRORS: tuple[type[BaseException], ...] = (
        OSError,
        asyncio.TimeoutError,
        asyncssh.DisconnectError,
        asyncssh.ConnectionLost,
    )


def backend() -> str:
    """``asyncssh`` (persistent connections) or ``binary`` (one ssh process per command)."""
    if asyncssh is None or os.environ.get("CLUSTERLINK_LAB_SSH") == "binary":
        return "binary"
    return "asyncssh"


@dataclass(frozen=True)
class Target:
    """Where a command runs: root@address with the lab's key; ``label`` names it in errors."""

    address: str
    key_path: Path
    label: str

    def ssh_argv(self, command: str | None = None) -> list[str]:
        """The ssh command line that runs ``command`` on the target."""
        argv = ["ssh", *SSH_OPTIONS, "-i", str(self.key_path), f"root@{self.address}"]
        return argv + (["--", command] if command is not None else [])


def command_text(command: str | Sequence[str]) -> str:
    """A shell command line: a string as is, a sequence quoted word by word."""
    return command if isinstance(command, str) else shlex.join(command)


class RemoteCommand:
    """A command started on a lab host: stream its output, wait for it, or stop it.

    ``lines()`` yields stdout lines (with their newline) as they arrive; ``wait()`` returns a
    ``subprocess.CompletedProcess`` (text) once it ends; ``exit_status`` is None while it runs,
    then its return code (negative signal number if a signal ended it, 255 if the connection
    was lost, 124 if ``wait``'s timeout stopped it).
    """

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._done = threading.Event()
        self._rc: int | None = None
        self._stopper: Callable[[], None] | None = None
        self._lock = threading.Lock()

    # ----- fed by a backend (any thread) ------------------------------------------------------
    def _out(self, text: str) -> None:
        self._stdout.append(text)
        self._queue.put(text)

    def _err(self, text: str) -> None:
        self._stderr.append(text)

    def _finish(self, rc: int, note: str = "") -> None:
        with self._lock:
            if self._done.is_set():
                return
            if note:
                self._stderr.append(note if note.endswith("\n") else note + "\n")
            self._rc = rc
            self._done.set()
        self._queue.put(None)

    # ----- public -------------------------------------------------------------------------
    @property
    def exit_status(self) -> int | None:
        """The return code once the command ended, else None."""
        return self._rc if self._done.is_set() else None

    @property
    def running(self) -> bool:
        """True until the command ended (or was stopped)."""
        return not self._done.is_set()

    @property
    def stdout(self) -> str:
        """Standard output received so far."""
        return "".join(self._stdout)

    @property
    def stderr(self) -> str:
        """Standard error received so far."""
        return "".join(self._stderr)

    def lines(self, timeout: float | None = None) -> Iterator[str]:
        """Stdout lines as they arrive, until the command ends; ``timeout`` bounds the wait for
        each line (``TimeoutError`` after it; the command keeps running)."""
        while True:
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no output line within {timeout}s: {self.args}") from None
            if item is None:
                self._queue.put(None)  # later calls end at once too
                return
            yield item

    def stop(self) -> None:
        """End the command on the host: SIGTERM to its process group, SIGKILL if it is still
        there after ``STOP_GRACE`` seconds (no-op once ended; returns at once)."""
        if self._stopper is not None and not self._done.is_set():
            self._stopper()

    def wait(self, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        """Wait for the end; past ``timeout`` seconds stop it and report returncode 124."""
        if not self._done.wait(timeout):
            self.stop()
            self._done.wait(STOP_GRACE + 2)
            with self._lock:
                self._stderr.append(f"\n[lab] timed out after {timeout}s\n")
                self._rc = TIMED_OUT
                if not self._done.is_set():
                    self._done.set()
                    self._queue.put(None)
        assert self._rc is not None
        return subprocess.CompletedProcess(self.args, self._rc, self.stdout, self.stderr)


# ----- one ssh process per command -------------------------------------------------------
def _start_binary(t: Target, command: str, input: str | None) -> RemoteCommand:
    argv = t.ssh_argv(command)
    cmd = RemoteCommand(argv)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )

    def pump(stream: Any, sink: Callable[[str], None]) -> None:
        for line in stream:
            sink(line)

    readers = [
        threading.Thread(target=pump, args=(proc.stdout, cmd._out), daemon=True),
        threading.Thread(target=pump, args=(proc.stderr, cmd._err), daemon=True),
    ]
    for r in readers:
        r.start()

    def reap() -> None:
        if input is not None and proc.stdin is not None:
            try:
                proc.stdin.write(input)
                proc.stdin.close()
            except OSError:
                pass
        for r in readers:
            r.join()
        cmd._finish(proc.wait())

    threading.Thread(target=reap, daemon=True).start()
    cmd._stopper = proc.terminate
    return cmd


# ----- persistent asyncssh connections ----------------------------------------------------
class _Pool:
    """One asyncssh connection per target, on an event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._conns: dict[Target, Any] = {}
        self._locks: dict[Target, asyncio.Lock] = {}
        self._thread = threading.Thread(target=self.loop.run_forever, name="lab-ssh", daemon=True)
        self._thread.start()
        atexit.register(self.close_all)

    def submit(self, coro: Any) -> Future[Any]:
        """Run a coroutine on the pool's loop (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def connection(self, t: Target, stale: Any = None) -> Any:
        """The target's connection, (re)connecting if there is none, it closed, or it is
        ``stale`` (the caller saw it fail)."""
        lock = self._locks.setdefault(t, asyncio.Lock())
        async with lock:
            conn = self._conns.get(t)
            if conn is not None and (conn is stale or conn.is_closed()):
                conn.close()
                del self._conns[t]
                conn = None
            if conn is None:
                conn = await asyncssh.connect(
                    t.address,
                    username="root",
                    client_keys=[str(t.key_path)],
                    known_hosts=None,
                    config=[],
                    agent_path=None,
                    preferred_auth="publickey",
                    connect_timeout=CONNECT_TIMEOUT,
                    keepalive_interval=KEEPALIVE[0],
                    keepalive_count_max=KEEPALIVE[1],
                )
                self._conns[t] = conn
            return conn

    async def _open(self, t: Target, command: str) -> Any:
        conn = await self.connection(t)
        for attempt in (1, 2):
            try:
                return await asyncio.wait_for(
                    conn.create_process(command, encoding="utf-8", errors="replace"),
                    OPEN_TIMEOUT,
                )
            except _CONN_ERRORS:
                if attempt == 2:
                    raise
                # The connection died under us (restart, link bounce): the command had not
                # started, so run it on a fresh connection.
                conn = await self.connection(t, stale=conn)
        raise AssertionError("unreachable")

    async def drive(self, t: Target, command: str, input: str | None, cmd: RemoteCommand) -> None:
        """Run ``command`` and feed ``cmd`` until it ends (or ``cmd.stop()`` ends it)."""
        opening = asyncio.ensure_future(self._open(t, f"echo {PID_MARK}$$ >&2; {command}"))
        # Stopped (or timed out) before its session opened: never start it later.
        cmd._stopper = lambda: self.loop.call_soon_threadsafe(opening.cancel)
        try:
            proc = await opening
        except asyncio.CancelledError:
            cmd._finish(LOST, f"ssh: {t.label}: stopped before the command started")
            return
        except (*_CONN_ERRORS, asyncssh.Error) as exc:
            cmd._finish(LOST, f"ssh: {t.label} ({t.address}): {type(exc).__name__}: {exc}")
            return
        pid: list[int] = []  # the remote shell's PID = its process group and session (setsid)

        def on_stderr(line: str) -> None:
            if not pid and line.startswith(PID_MARK) and line.strip()[len(PID_MARK) :].isdigit():
                pid.append(int(line.strip()[len(PID_MARK) :]))
            else:
                cmd._err(line)

        async def pump(reader: Any, sink: Callable[[str], None]) -> None:
            async for line in reader:
                if line:
                    sink(line)

        async def io() -> str:
            try:
                if input is not None:
                    proc.stdin.write(input)
                proc.stdin.write_eof()
                await asyncio.gather(pump(proc.stdout, cmd._out), pump(proc.stderr, on_stderr))
                await proc.wait_closed()
            except (*_CONN_ERRORS, asyncssh.Error) as exc:
                return f"ssh: {t.label}: connection lost: {type(exc).__name__}: {exc}"
            return ""

        stop_requested = asyncio.Event()
        cmd._stopper = lambda: self.loop.call_soon_threadsafe(stop_requested.set)
        main = asyncio.ensure_future(io())
        stop = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait({main, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        note = ""
        if not main.done():
            # sshd ignores SSH "signal" requests and leaves a closed session's command
            # running: signal the command's process group from a second session instead.
            for sig, grace in (("TERM", STOP_GRACE), ("KILL", 2.0)):
                if pid:
                    await self._signal(t, pid[0], sig)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(main), grace)
                if main.done():
                    break
            if not main.done():
                proc.close()
                main.cancel()
                note = f"ssh: {t.label}: stopped command did not end"
        if main.done() and not main.cancelled():
            note = main.result()
        rc = proc.returncode
        cmd._finish(LOST if rc is None else rc, note if rc is None else "")

    async def _signal(self, t: Target, pid: int, sig: str) -> None:
        """``kill -SIG -- -PID`` on the target (a process group), best effort."""
        with contextlib.suppress(*_CONN_ERRORS, asyncssh.Error):
            conn = await self.connection(t)
            await asyncio.wait_for(conn.run(f"kill -{sig} -- -{pid}"), OPEN_TIMEOUT)

    async def put(self, t: Target, src: str, dest: str) -> None:
        """``scp -r src root@target:dest`` over the target's connection."""
        conn = await self.connection(t)
        try:
            await asyncssh.scp(src, (conn, dest), recurse=True)
        except _CONN_ERRORS:
            conn = await self.connection(t, stale=conn)
            await asyncssh.scp(src, (conn, dest), recurse=True)

    async def forget(self, match: Callable[[Target], bool]) -> None:
        """Close the connections of the targets ``match`` selects."""
        for t in [t for t in self._conns if match(t)]:
            conn = self._conns.pop(t)
            conn.close()

    def close_all(self) -> None:
        """Close every connection (at exit; bounded)."""
        if self.loop.is_running():
            with contextlib.suppress(Exception):  # best effort at interpreter exit
                self.submit(self.forget(lambda _t: True)).result(2)


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _Pool()
        return _POOL


# ----- the API the lab uses ---------------------------------------------------------------
def start(t: Target, command: str | Sequence[str], input: str | None = None) -> RemoteCommand:
    """Start ``command`` (a shell command line, or argv to quote) as root on the target."""
    text = command_text(command)
    if backend() == "binary":
        return _start_binary(t, text, input)
    cmd = RemoteCommand(t.ssh_argv(text))
    _pool().submit(_pool().drive(t, text, input, cmd))
    return cmd


async def arun(
    t: Target,
    command: str | Sequence[str],
    input: str | None = None,
    timeout: float | None = 120,  # noqa: ASYNC109 - stops the remote command: rc 124
) -> subprocess.CompletedProcess[str]:
    """``start(...).wait(timeout)`` for coroutines: awaitable from any event loop."""
    cmd = start(t, command, input)
    return await asyncio.get_running_loop().run_in_executor(None, cmd.wait, timeout)


def put(t: Target, src: str | Path, dest: str, timeout: float = 600) -> None:
    """Copy a local file or directory to ``dest`` on the target (like ``scp -r``)."""
    if backend() == "binary":
        argv = ["scp", "-q", "-r", *SSH_OPTIONS, "-i", str(t.key_path), str(src)]
        proc = subprocess.run(
            [*argv, f"root@{t.address}:{dest}"], capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise OSError(f"scp to {t.label} failed (rc={proc.returncode}): {proc.stderr.strip()}")
        return
    _pool().submit(_pool().put(t, str(src), dest)).result(timeout)


def forget(match: Callable[[Target], bool]) -> None:
    """Drop the persistent connections of the targets ``match`` selects (no-op without)."""
    if _POOL is not None:
        _POOL.submit(_POOL.forget(match)).result(10)
