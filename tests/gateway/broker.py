"""A private mosquitto for tests: a free 127.0.0.1 port, persistence in a temporary directory.

Shared with ``tests/simulators`` (``from tests.gateway.broker import Mosquitto``). The broker's
inflight window is raised (group commits acknowledge more than mosquitto's default 20 at once) and
its per-client queue is unbounded, so a persistent session keeps everything while our client is down.

With ``certfile`` and ``keyfile`` it also listens with TLS on ``tls_port`` (the plain listener
stays, for publishers that need no TLS); ``require_certificate`` makes that listener refuse a
client without a certificate from ``cafile`` (mutual TLS).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Mosquitto", "free_port", "mosquitto_binary"]


def mosquitto_binary() -> str:
    """The mosquitto executable (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise RuntimeError("mosquitto is not installed: apt-get install -y mosquitto (./run test does it)")
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Mosquitto:
    """One mosquitto process; `stop` and `start` again keep the port and the persisted sessions."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        port: int | None = None,
        max_inflight: int = 1000,
        cafile: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        require_certificate: bool = False,
    ) -> None:
        # Started as root, mosquitto drops to the 'mosquitto' user, which must reach and write its
        # directory (pytest's tmp_path is 0700): without that, sessions silently do not survive a
        # restart. So by default it gets a world-writable directory of its own under /tmp.
        self._own_directory = directory is None
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="ecallgw-mosquitto-"))
        self.directory = directory
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "autosave_interval 1\n"
            f"max_inflight_messages {max_inflight}\n"
            "max_queued_messages 0\n"
            "log_type error\nlog_type warning\n"
            f"log_dest file {directory}/mosquitto.log\n"
        )
        self.tls_port: int | None = None
        if certfile is not None or keyfile is not None:
            self.tls_port = free_port()
            with self.conf.open("a") as conf:
                conf.write(self._tls_listener(cafile, certfile, keyfile, require_certificate))

    def _tls_listener(
        self, cafile: Path | None, certfile: Path | None, keyfile: Path | None, require_certificate: bool
    ) -> str:
        """The TLS listener's lines; its files copied where mosquitto, once it dropped root, reads them."""
        if certfile is None or keyfile is None or (require_certificate and cafile is None):
            raise ValueError("a TLS listener needs certfile and keyfile (and cafile to require certificates)")
        tls_dir = self.directory / "tls"
        tls_dir.mkdir(exist_ok=True)
        tls_dir.chmod(0o755)
        files = {"certfile": certfile, "keyfile": keyfile, **({"cafile": cafile} if cafile else {})}
        lines = [f"listener {self.tls_port} 127.0.0.1"]
        for option, source in files.items():
            copy = tls_dir / f"{option}.pem"
            shutil.copyfile(source, copy)
            copy.chmod(0o600 if option == "keyfile" else 0o644)
            if option == "keyfile" and os.geteuid() == 0:
                try:  # started as root, mosquitto reads its files as the 'mosquitto' user
                    user = pwd.getpwnam("mosquitto")
                    os.chown(copy, user.pw_uid, user.pw_gid)
                except KeyError:
                    copy.chmod(0o644)
            lines.append(f"{option} {copy}")
        if require_certificate:
            lines.append("require_certificate true")
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 5.0) -> None:
        """Start the broker and wait until it accepts connections."""
        if self.proc is not None:
            raise RuntimeError("already running")
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout_s
        waiting = [port for port in (self.port, self.tls_port) if port is not None]
        while waiting and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log()}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=0.2):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.02)
        if waiting:
            raise RuntimeError(f"mosquitto did not listen on {waiting[0]}: {self.log()}")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGTERM saves sessions to disk; ``kill=True`` does not)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        """Stop gracefully and start again on the same port."""
        self.stop()
        self.start()

    def log(self) -> str:
        """The broker's log so far (for failure messages)."""
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the directory this broker created for itself."""
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
