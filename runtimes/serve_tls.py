"""https for the field app: phones run service workers (offline mode) and the camera only in a secure
context, and a Pi on a hotspot is not ``localhost`` to them.

``--self-signed`` makes a small private CA and a server certificate it signs for the hosts the app is
reached by (IP addresses and names as subjectAltName), stored beside the feedback database and reused on
restart while they still cover those hosts, so a phone trusts them once.

A phone that installs the CA trusts it for every site, so the CA is made as harmless as it can be: it is
name-constrained to the served hosts (a certificate it signed for any other name or address is refused
by the phone), it lives no longer than the one certificate it signs, and its private key exists only in
memory while that certificate is signed, never on the SD card (whoever takes the card gets nothing that
can impersonate another site). A new host list means a new CA, installed again. Chrome refuses to register a
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

from lugha.atomic import atomic_path, atomic_write_bytes
from lugha.errors import ConfigError, MissingDependencyError

SERVER_DAYS = 397  # browsers refuse server certificates valid for longer than 398 days
CA_DAYS = SERVER_DAYS + 1  # the CA signs once (its key is then gone): it need not outlive that certificate
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
    """The stored files form a usable set: the key is the certificate's (a crash between two renames
    cannot leave a mismatch in use), the certificate covers every host and is not about to expire, and
    the CA is a name-constrained one (an older unconstrained CA is replaced)."""
    x509 = _crypto()[0]
    try:
        if not all((folder / f).is_file() for f in ("ca.crt", "server.crt", "server.key")):
            return False
        cert = x509.load_pem_x509_certificate(_first_pem(folder / "server.crt"))
        ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        ca.extensions.get_extension_for_class(x509.NameConstraints)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
        ok_until = cert.not_valid_after_utc - RENEW_BEFORE
        if cert.issuer != ca.subject or not set(hosts) <= names or dt.datetime.now(dt.timezone.utc) >= ok_until:
            return False
        server_context(folder / "server.crt", folder / "server.key")  # the key matches the certificate
        return True
    except (OSError, ValueError, ConfigError, x509.ExtensionNotFound):
        return False


def _write_private(path: Path, data: bytes) -> None:
    """A key, written whole or not at all (unique temp, fsync, rename), never readable by others."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)


def _permitted(x509, hosts: tuple[str, ...]) -> list:
    """The CA's permitted subtrees: exactly the served names and single addresses."""
    out = []
    for h in hosts:
        try:
            ip = ipaddress.ip_address(h)
            out.append(x509.IPAddress(ipaddress.ip_network(f"{ip}/{ip.max_prefixlen}")))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


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
          .add_extension(x509.NameConstraints(permitted_subtrees=_permitted(x509, hosts), excluded_subtrees=None),
                         critical=True)
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
    del ca_key  # signing is done: the CA key is never written anywhere
    (folder / "ca.key").unlink(missing_ok=True)  # left by an older lugha, which kept it beside the database
    _write_private(folder / "server.key", key_bytes(key))
    atomic_write_bytes(folder / "server.crt", leaf.public_bytes(pem) + ca.public_bytes(pem))
    atomic_write_bytes(folder / "ca.crt", ca.public_bytes(pem))
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
