"""An SSH channel to the board agent, over the system OpenSSH client (``ssh``).

The ``ssh`` backend copies :mod:`latbench.remote.agent` to the board, starts
it with the board's ``python3`` and exchanges JSON lines with it over the
channel's stdin / stdout. OpenSSH does the transport, authentication and host
key checking; latbench never handles a password (``BatchMode=yes``: a key or
an agent must work without prompting).

A connection that drops (network, board reboot, a killed ``ssh``) surfaces as
:class:`ConnectionLost`; the backend reconnects and repeats the call it was
making, so a build loses at most the timed calls of that one op.
"""

from __future__ import annotations

import base64
import hashlib
import json
import queue
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latbench.errors import LatbenchError

AGENT_SOURCE = Path(__file__).with_name("agent.py")


class RemoteError(LatbenchError):
    """A board that cannot be reached, refuses the key, or whose agent failed."""


class ConnectionLost(RemoteError):
    """The SSH channel closed while a request was in flight."""


@dataclass(frozen=True)
class SSHTarget:
    """Where a board is and how to log in: host, port, user, key, known-hosts policy."""

    host: str
    port: int = 22
    user: str | None = None
    key: str | None = None
    known_hosts: str | None = None
    strict_host_keys: str = "accept-new"
    connect_timeout_s: int = 10
    python: str = "python3"
    remote_dir: str = "$HOME/.cache/latbench-agent"

    @property
    def label(self) -> str:
        who = f"{self.user}@" if self.user else ""
        return f"{who}{self.host}:{self.port}"

    def argv(self, remote_command: str) -> list[str]:
        """The ``ssh`` command line running ``remote_command`` on the board."""
        opts = [
            "-T",
            "-p",
            str(int(self.port)),
            "-o",
            "BatchMode=yes",
            "-o",
            f"ConnectTimeout={int(self.connect_timeout_s)}",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            f"StrictHostKeyChecking={self.strict_host_keys}",
            "-o",
            "LogLevel=ERROR",
        ]
        if self.known_hosts:
            opts += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.key:
            opts += ["-i", str(Path(self.key).expanduser()), "-o", "IdentitiesOnly=yes"]
        dest = f"{self.user}@{self.host}" if self.user else self.host
        return ["ssh", *opts, dest, remote_command]


def _ssh_failure(target: SSHTarget, stderr: str, rc: int | None) -> RemoteError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    last = lines[-1] if lines else f"ssh exited with code {rc}"
    return RemoteError(
        f"cannot reach board {target.label} over ssh: {last[:300]}; check the profile's host, port, user and key"
    )


def agent_digest() -> str:
    return hashlib.sha256(AGENT_SOURCE.read_bytes()).hexdigest()[:16]


def install_agent(target: SSHTarget, timeout_s: float = 60.0) -> str:
    """Copy the agent to the board (atomically, once per agent version); returns its remote path."""
    path = f"{target.remote_dir}/agent-{agent_digest()}.py"
    cmd = (
        f"mkdir -p {target.remote_dir}/models && if [ ! -f {path} ]; then "
        f"cat > {path}.$$ && mv {path}.$$ {path}; else cat > /dev/null; fi"
    )
    try:
        res = subprocess.run(
            target.argv(cmd), input=AGENT_SOURCE.read_bytes(), capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        raise RemoteError(f"board {target.label} did not answer within {timeout_s:.0f} s (ssh)") from None
    except FileNotFoundError:
        raise RemoteError("the OpenSSH client `ssh` is not installed here (apt-get install openssh-client)") from None
    if res.returncode != 0:
        raise _ssh_failure(target, res.stderr.decode(errors="replace"), res.returncode)
    return path


class AgentChannel:
    """One running agent on the board: send a request, wait for its reply (JSON lines)."""

    def __init__(self, target: SSHTarget, timeout_s: float = 300.0, lock_wait_s: float = 600.0) -> None:
        self.target = target
        self.timeout_s = timeout_s + lock_wait_s  # a block of timed calls may first wait for the board's lock
        path = install_agent(target)
        cmd = f"exec {shlex.quote(target.python)} -u {path} {target.remote_dir}/models {float(lock_wait_s)}"
        try:
            self.proc = subprocess.Popen(
                target.argv(cmd),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches latbench, which closes the channel itself
            )
        except FileNotFoundError:
            raise RemoteError("the OpenSSH client `ssh` is not installed here") from None
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        ready = self._recv(timeout_s=120.0)
        if not ready.get("ok"):
            self.close()
            raise RemoteError(f"board {target.label}: {ready.get('error', 'the agent did not start')}")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._err.append(line.decode(errors="replace"))
            del self._err[:-20]

    def _recv(self, timeout_s: float | None = None) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s or self.timeout_s)
        except queue.Empty:
            self.close()
            waited = timeout_s or self.timeout_s
            raise ConnectionLost(f"board {self.target.label} sent no reply within {waited:.0f} s") from None
        if line is None:
            self.proc.wait()
            err = "".join(self._err)
            if self.proc.returncode == 255 or ("python" in err.lower() and "not found" in err.lower()):
                raise _ssh_failure(self.target, err, self.proc.returncode)
            raise ConnectionLost(f"connection to board {self.target.label} closed ({_last(err) or 'no reason'})")
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            raise RemoteError(f"board {self.target.label} sent a line that is not JSON: {line[:120]!r}") from None
        if not isinstance(doc, dict):
            raise RemoteError(f"board {self.target.label} sent {type(doc).__name__}, not a JSON object")
        return doc

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and return its reply; an agent-side failure is a one-line :class:`RemoteError`."""
        if self.proc.stdin is None or not self.alive:
            raise ConnectionLost(f"connection to board {self.target.label} is closed")
        try:
            self.proc.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise ConnectionLost(f"connection to board {self.target.label} closed while sending") from None
        reply = self._recv()
        if not reply.get("ok"):
            raise RemoteError(f"board {self.target.label} could not {op}: {reply.get('error', '?')}")
        return reply

    def upload(self, files: list[Path]) -> dict[str, str]:
        """Make sure the board caches every file (by sha256); uploads only the missing. Returns path -> name."""
        names = {str(f): hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}
        have = set(self.call("have", names=sorted(set(names.values())))["have"])
        for f, name in names.items():
            if name not in have:
                self.call("put", name=name, data=base64.b64encode(Path(f).read_bytes()).decode())
                have.add(name)
        return names

    def close(self) -> None:
        if self.alive:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"op": "bye"}\n')
                self.proc.stdin.flush()
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""
