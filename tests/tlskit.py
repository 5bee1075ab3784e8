"""Certificates made at test time: a CA, a server certificate for 127.0.0.1, client certificates.

Everything here is generated fresh (``cryptography``), written to a temp dir as PEM files with
0600 keys, and valid for a day; nothing is committed and nothing reaches beyond 127.0.0.1. A second
CA (``other``) signs certificates a correct client must refuse.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Pki", "make_pki"]


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path

    @property
    def fingerprint_sha256(self) -> str:
        """The certificate's SHA-256 fingerprint, lower-case hex without colons."""
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return cert.fingerprint(hashes.SHA256()).hex()

    @property
    def spki_sha256(self) -> str:
        """SHA-256 of the public key (SubjectPublicKeyInfo), hex: what key pinning compares."""
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        spki = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashes.Hash(hashes.SHA256())
        digest.update(spki)
        return digest.finalize().hex()


@dataclass(frozen=True)
class Pki:
    """Everything a TLS test needs.

    Attributes:
        ca: the trusted CA's certificate file (``ca.key`` beside it).
        server: server certificate for 127.0.0.1 and localhost, signed by ``ca``.
        client: client certificate (CN ``acme``), signed by ``ca``.
        other_ca: a CA nobody trusts.
        rogue_server: a server certificate for 127.0.0.1 signed by ``other_ca``.
        rogue_client: a client certificate (CN ``acme``) signed by ``other_ca``.
        wrong_host: a server certificate from ``ca`` for ``example.invalid`` only (hostname check).
    """

    ca: Path
    server: Pair
    client: Pair
    other_ca: Path
    rogue_server: Pair
    rogue_client: Pair
    wrong_host: Pair

    def client_context(self, *, with_cert: bool = True) -> ssl.SSLContext:
        """A client context trusting ``ca``, presenting ``client`` unless told not to."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if with_cert:
            ctx.load_cert_chain(str(self.client.cert), str(self.client.key))
        return ctx


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _ca(directory: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / f"{name}.key")
    return cert, key, path


def _leaf(
    directory: Path,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path],
    *,
    cn: str,
    hosts: list[str],
    server: bool,
) -> Pair:
    ca_cert, ca_key, _ = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if hosts:
        alt: list[x509.GeneralName] = []
        for h in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                alt.append(x509.DNSName(h))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = Pair(cert=directory / f"{name}.pem", key=directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def make_pki(directory: Path) -> Pki:
    """Generate a CA, a rogue CA and their certificates into ``directory`` (created)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    other = _ca(directory, "other-ca")
    local = ["127.0.0.1", "localhost"]
    return Pki(
        ca=ca[2],
        server=_leaf(directory, "server", ca, cn="127.0.0.1", hosts=local, server=True),
        client=_leaf(directory, "client", ca, cn="acme", hosts=[], server=False),
        other_ca=other[2],
        rogue_server=_leaf(directory, "rogue-server", other, cn="127.0.0.1", hosts=local, server=True),
        rogue_client=_leaf(directory, "rogue-client", other, cn="acme", hosts=[], server=False),
        wrong_host=_leaf(
            directory, "wrong-host", ca, cn="example.invalid", hosts=["example.invalid"], server=True
        ),
    )
