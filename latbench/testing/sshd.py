"""A throwaway OpenSSH server on 127.0.0.1 that stands for a Linux board in tests.

:func:`start_sshd` makes host and user keys with ``ssh-keygen`` in a temporary
folder, writes an ``sshd_config`` (ephemeral port, ``AuthorizedKeysFile`` in
that folder, ``StrictModes no``, PidFile there) and runs ``/usr/sbin/sshd -D``
as a child process. The current user logs in with the user key. The board's
Python is the one running the tests (a ``python3`` on ``PATH`` of the login
shell works as well).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def sshd_unavailable_reason() -> str | None:
    """``None`` when a test sshd can run here, else why not."""
    if not Path(SSHD).exists():
        return f"{SSHD} is not installed (apt-get install -y openssh-server)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install -y openssh-client)"
    if os.geteuid() != 0:
        return "sshd on an ephemeral port needs root here (it switches users)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TestBoard:
    """A running test sshd: where it listens and how to log in."""

    __test__ = False  # not a pytest class

    proc: subprocess.Popen[bytes]
    port: int
    user: str
    key: Path
    known_hosts: Path
    folder: Path
    python: str = "python3"

    def settings(self, **extra: object) -> dict[str, object]:
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "key": str(self.key),
            "known_hosts": str(self.known_hosts),
            "python": self.python,
            **extra,
        }

    def set_args(self, **extra: object) -> list[str]:
        """The arguments of ``latbench profile ssh`` for this board: ``--host/--port/--user/--key``, the rest
        as ``--set key=value``."""
        out: list[str] = []
        for k, v in self.settings(**extra).items():
            out += [f"--{k}", str(v)] if k in ("host", "port", "user", "key") else ["--set", f"{k}={v}"]
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(folder: Path, python: str = "python3") -> TestBoard:
    """Start sshd in ``folder`` (keys, config, pid file); returns when it accepts connections.

    ``python`` is the interpreter the board runs the agent with (it needs numpy and onnxruntime).
    """
    folder.mkdir(parents=True, exist_ok=True)
    host_key, user_key = folder / "host_ed25519", folder / "user_ed25519"
    for k in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    (folder / "authorized_keys").write_text((folder / "user_ed25519.pub").read_text())
    port = _free_port()
    config = folder / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {folder}/authorized_keys",
                "StrictModes no",
                f"PidFile {folder}/sshd.pid",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation folder sshd insists on
    known = folder / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(folder / 'host_ed25519.pub').read_text()}")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"sshd exited with code {proc.returncode}: {err.strip()[-300:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.1)
    return TestBoard(proc, port, getpass.getuser(), user_key, known, folder, python)
