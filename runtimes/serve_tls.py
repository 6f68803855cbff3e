"""https for the field app: phones run service workers (offline mode) and the camera only in a secure
context, and a Pi on a hotspot is not ``localhost`` to them.

``--self-signed`` makes a small private CA and a server certificate it signs for the hosts the app is
reached by (IP addresses and names as subjectAltName), stored beside the feedback database and reused on
restart while they still cover those hosts, so a phone trusts them once. Chrome refuses to register a
service worker over a certificate it was only told to click through, so the tester installs the CA
certificate (served at ``/ca.crt``; Android: Settings > Security > Install a certificate > CA) after
checking its SHA-256 fingerprint against the one ``lugha serve`` prints.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from lugha.errors import ConfigError, MissingDependencyError

CA_DAYS = 3650
SERVER_DAYS = 397  # browsers refuse server certificates valid for longer than 398 days
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # the server certificate followed by the CA's (the chain a client needs)
    key: Path
    ca_cert: Path | None  # what a phone installs; None for a certificate the operator brought
    fingerprint: str  # SHA-256 of the CA certificate (else the server's), as browsers show it: AB:CD:...
    hosts: tuple[str, ...]
    created: bool


def fingerprint(pem_or_der: bytes) -> str:
    """SHA-256 of a certificate's DER bytes in the colon-separated hex that browsers and Android show."""
    der = ssl.PEM_cert_to_DER_cert(pem_or_der.decode("ascii")) if pem_or_der.lstrip().startswith(b"-----") else pem_or_der
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def _first_pem(path: Path) -> bytes:
    text = path.read_bytes()
    end = text.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----")
    return text[:end] + b"\n"


def tls_folder(db: str | os.PathLike) -> Path:
    """Where --self-signed keeps its files: beside the database (``field.sqlite`` -> ``field.tls/``)."""
    db = Path(db)
    return db.with_name(db.stem + ".tls")


def _crypto():
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise MissingDependencyError("--self-signed needs the 'cryptography' package: pip install cryptography") from None
    return x509, hashes, serialization, ec, NameOID, ExtendedKeyUsageOID


def _san(x509, host: str):
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _still_good(folder: Path, hosts: tuple[str, ...]) -> bool:
    """The stored server certificate covers every host and is not about to expire."""
    x509 = _crypto()[0]
    try:
        cert = x509.load_pem_x509_certificate(_first_pem(folder / "server.crt"))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
        ok_until = cert.not_valid_after_utc - RENEW_BEFORE
        return all((folder / f).is_file() for f in ("ca.crt", "ca.key", "server.key")) and \
            set(hosts) <= names and dt.datetime.now(dt.timezone.utc) < ok_until
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a key is never world-readable
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def self_signed(folder: str | os.PathLike, hosts: list[str] | tuple[str, ...]) -> TlsFiles:
    """A private CA + a server certificate for ``hosts`` in ``folder`` (made, or reused when still good)."""
    x509, hashes, serialization, ec, NameOID, EKU = _crypto()
    folder = Path(folder)
    hosts = tuple(dict.fromkeys(h for h in hosts if h))
    if not hosts:
        raise ConfigError("--host", "a self-signed certificate needs the address phones will use")
    if _still_good(folder, hosts):
        return TlsFiles(folder / "server.crt", folder / "server.key", folder / "ca.crt",
                        fingerprint((folder / "ca.crt").read_bytes()), hosts, False)
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # a phone's clock may run behind
    pem = serialization.Encoding.PEM
    no_pass = serialization.NoEncryption()

    def key_bytes(key) -> bytes:
        return key.private_bytes(pem, serialization.PrivateFormat.PKCS8, no_pass)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"lugha field test CA ({hosts[0]})"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "lugha serve")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + dt.timedelta(days=CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName([_san(x509, h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([EKU.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(folder / "ca.key", key_bytes(ca_key))
    _write_private(folder / "server.key", key_bytes(key))
    (folder / "ca.crt").write_bytes(ca.public_bytes(pem))
    (folder / "server.crt").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    return TlsFiles(folder / "server.crt", folder / "server.key", folder / "ca.crt", fingerprint(ca.public_bytes(pem)),
                    hosts, True)


def given_files(cert: str | os.PathLike, key: str | os.PathLike) -> TlsFiles:
    """An operator's own certificate and key (checked now, so a typo fails at start, not at the first phone)."""
    cert, key = Path(cert), Path(key)
    for flag, p in (("--tls-cert", cert), ("--tls-key", key)):
        if not p.is_file():
            raise ConfigError(flag, f"{p}: no such file")
    server_context(cert, key)
    return TlsFiles(cert, key, None, fingerprint(_first_pem(cert)), (), False)


def server_context(cert: str | os.PathLike, key: str | os.PathLike) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, ValueError) as e:
        raise ConfigError("--tls-cert/--tls-key", f"{cert} + {key}: not a certificate and its key ({e})") from None
    return ctx


__all__ = ["TlsFiles", "self_signed", "given_files", "server_context", "fingerprint", "tls_folder"]
