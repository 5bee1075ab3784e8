"""TLS contexts for every link that leaves the host, and the certificate digests that identify peers.

A certificate, key or CA file that cannot be read or loaded is a `ConfigError` naming the key it came
from (the daemon refuses to start, exit 2), never a traceback. Contexts are built once at start:
rotating a certificate means restarting the process.

Digests are lower-case hex SHA-256 without separators: of the certificate (DER) for a certificate
fingerprint, of its SubjectPublicKeyInfo for a key pin (survives a re-issue with the same key).
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Iterable

from ecallgw.errors import ConfigError

__all__ = [
    "PinMismatchError",
    "cert_sha256",
    "client_context",
    "normalize_sha256",
    "peer_common_name",
    "pin",
    "server_context",
    "spki_sha256",
]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _readable(path: str, key: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(key, path, f"cannot read: {exc.strerror or exc}") from exc


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str, cert_key: str, key_key: str) -> None:
    _readable(cert_file, cert_key)
    _readable(key_file, key_key)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            cert_key, cert_file, f"certificate and key {key_file!r} do not load together: {exc}"
        ) from exc


def _load_ca(ctx: ssl.SSLContext, ca_file: str, ca_key: str) -> None:
    _readable(ca_file, ca_key)
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(ca_key, ca_file, f"not a PEM CA bundle: {exc}") from exc


def server_context(
    cert_file: str,
    key_file: str,
    *,
    client_ca_file: str = "",
    require_client_cert: bool = False,
    where: str = "http.",
) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, our certificate, optionally client certificates.

    Args:
        cert_file: our certificate chain (PEM).
        key_file: its private key (PEM).
        client_ca_file: CAs whose client certificates are accepted; "" asks for none.
        require_client_cert: refuse a client without one (else a certificate is optional, and a
            client without one authenticates otherwise, with a bearer token).
        where: prefix of the keys named in errors (``{where}tls_cert_file``, ``{where}tls_key_file``,
            ``{where}client_ca_file``).

    Raises:
        ConfigError: a file that cannot be read or loaded.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_file, key_file, f"{where}tls_cert_file", f"{where}tls_key_file")
    if client_ca_file:
        _load_ca(ctx, client_ca_file, f"{where}client_ca_file")
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    *, ca_file: str = "", cert_file: str = "", key_file: str = "", where: str
) -> ssl.SSLContext:
    """A client context that verifies the server's chain and host name, optionally with our certificate.

    Args:
        ca_file: CAs to trust; "" trusts the system's.
        cert_file: our client certificate (mutual TLS); "" presents none.
        key_file: its private key.
        where: prefix of the keys named in errors (``{where}ca_file``, ``{where}cert_file``,
            ``{where}key_file``), e.g. ``receivers.psap.``.

    Raises:
        ConfigError: a file that cannot be read or loaded.
    """
    if ca_file:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts nothing until the bundle is loaded
        _load_ca(ctx, ca_file, f"{where}ca_file")
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file or key_file:
        _load_chain(ctx, cert_file, key_file, f"{where}cert_file", f"{where}key_file")
    return ctx


# --- digests --------------------------------------------------------------------------------------


def normalize_sha256(text: str) -> str | None:
    """``AB:CD:…`` or ``abcd…`` → 64 lower-case hex digits; None when it is not a SHA-256 in hex."""
    digest = text.strip().replace(":", "").lower()
    return digest if _HEX64.match(digest) else None


def cert_sha256(der: bytes) -> str:
    """The certificate's SHA-256 fingerprint."""
    return hashlib.sha256(der).hexdigest()


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of the value, end of the element) of the DER element at ``pos``."""
    tag = der[pos]
    length = der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if not 0 < n <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, pos, end


def spki_sha256(der: bytes) -> str:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (what a key pin compares).

    Raises:
        ValueError: not a DER X.509 certificate.
    """
    try:
        _, pos, _ = _tlv(der, 0)  # Certificate ::= SEQUENCE {
        _, pos, _ = _tlv(der, pos)  # tbsCertificate SEQUENCE {
        tag, _, end = _tlv(der, pos)
        if tag == 0xA0:  # [0] EXPLICIT version
            pos = end
        for _ in range(5):  # serialNumber, signature, issuer, validity, subject
            _, _, pos = _tlv(der, pos)
        tag, _, end = _tlv(der, pos)  # subjectPublicKeyInfo
    except IndexError as exc:
        raise ValueError("truncated DER") from exc
    if tag != 0x30:
        raise ValueError("no SubjectPublicKeyInfo where expected")
    return hashlib.sha256(der[pos:end]).hexdigest()


def peer_common_name(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The subject CN of the peer's verified certificate; None without one (or with several CNs)."""
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    names = [pair[1] for rdn in cert.get("subject", ()) for pair in rdn if pair[0] == "commonName"]
    return names[0] if len(names) == 1 else None


# --- pinning --------------------------------------------------------------------------------------


class PinMismatchError(ssl.SSLCertVerificationError):
    """The peer's certificate verified, but neither its fingerprint nor its key's matches a pin."""


class _PinnedObject(ssl.SSLObject):
    """An SSLObject that checks the peer's certificate against pins once its handshake completes.

    The check runs inside the handshake, before a byte of a request is written; raising an
    ``SSLError`` from ``do_handshake`` fails the connection in asyncio's and uvloop's TLS layers.
    """

    pins: frozenset[str] = frozenset()
    where: str = ""

    def do_handshake(self) -> None:
        super().do_handshake()
        der = self.getpeercert(binary_form=True)
        if der is None:
            raise PinMismatchError(f"no server certificate to check against {self.where}")
        fingerprint = cert_sha256(der)
        try:
            key = spki_sha256(der)
        except ValueError:
            key = ""
        if fingerprint not in self.pins and key not in self.pins:
            raise PinMismatchError(
                f"server certificate sha256 {fingerprint} (key sha256 {key or '?'}) matches no {self.where}"
            )


def pin(ctx: ssl.SSLContext, pins: Iterable[str], *, where: str) -> None:
    """Make ``ctx``'s connections accept only a peer whose certificate or key SHA-256 is in ``pins``.

    Chain and host-name checks still apply; the pin is checked on top of them. ``where`` is the key
    named in the error (``receivers.psap.pin_sha256``).
    """
    ctx.sslobject_class = type("PinnedSSLObject", (_PinnedObject,), {"pins": frozenset(pins), "where": where})
