"""The key of the VIN pseudonyms in logs, kept in a file of its own (``pipeline.pseudonym_key_file``).

Logs leave the machine (a log shipper, a ticket); whoever holds the key can test a guessed VIN
against a pseudonym, so the key does not belong beside the data in the store file, nor in its
backups. The file holds the key as text (a random one is written, mode 0600, when the file is
missing); the key is the SHA-256 of that text. A file that group or others may read or write is
refused: the daemon does not start on a key that may have leaked.

Only logs use this key. Triage derives incident ids from its own key (``pipeline.pseudonym_key``,
else the one kept in the store), so replacing this file changes the pseudonyms in new log lines and
nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from pathlib import Path

from ecallgw.errors import ConfigError

__all__ = ["MIN_KEY_CHARS", "load_key_file"]

MIN_KEY_CHARS = 32
"""Shortest key text accepted (a generated key is 64 hex digits: 256 bits)."""

_KEY = "pipeline.pseudonym_key_file"


def load_key_file(path: str | Path) -> bytes:
    """The 32-byte log pseudonym key from ``path``, creating the file with a random key if missing.

    Raises:
        ConfigError: naming ``pipeline.pseudonym_key_file`` when the file is not a regular file,
            may be read or written by group or others, cannot be read or created, or holds less
            than ``MIN_KEY_CHARS`` characters.
    """
    p = Path(path)
    try:
        _create(p)
        fd = os.open(p, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(_KEY, str(p), f"cannot read or create: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)  # the file opened, not whatever the path names a moment later
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(_KEY, str(p), "is not a regular file")
        if st.st_mode & 0o077:
            raise ConfigError(
                _KEY,
                str(p),
                f"mode {stat.S_IMODE(st.st_mode):04o} lets group or others read or write the key: "
                "chmod 600 it (and rotate the key if it may have leaked)",
            )
        with os.fdopen(os.dup(fd), "rb") as fh:
            text = fh.read(4096).strip()
    except OSError as exc:
        raise ConfigError(_KEY, str(p), f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(text) < MIN_KEY_CHARS:
        raise ConfigError(_KEY, str(p), f"holds {len(text)} characters; a key needs at least {MIN_KEY_CHARS}")
    return hashlib.sha256(text).digest()


def _create(p: Path) -> None:
    """Write a random key to ``p`` (mode 0600) unless it exists; its directory is made 0700."""
    if p.exists() or p.is_symlink():
        return
    if not p.parent.is_dir():
        p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a reader (another replica on a
    # shared volume) never sees a half-written key, and a key that appeared meanwhile wins.
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            os.write(fd, (secrets.token_hex(32) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
