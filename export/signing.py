"""ed25519 signatures over a bundle's manifest.json (which holds the SHA-256 of every other file).

Signing the manifest signs the whole bundle: a device checks the signature with the publisher's public
key, then every file's hash against the signed manifest (that check is lugha.runtimes.signature's, the one
``open_bundle``, ``serve``, ``doctor`` and ``bundle verify`` run). Keys are PEM files (PKCS#8 private,
SubjectPublicKeyInfo public), as ``openssl genpkey -algorithm ed25519`` writes them. Needs the
``cryptography`` package; nothing else in lugha does.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path

from lugha.errors import MissingDependencyError
from lugha.manifest import MANIFEST_NAME, bundle_root
from lugha.runtimes.signature import SIGNATURE_NAME, SignatureError


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError("bundle signing needs the 'cryptography' package: pip install cryptography") from None
    return serialization, ed25519


def generate_keypair(private_path: str | os.PathLike, public_path: str | os.PathLike) -> None:
    """Write a new ed25519 key pair as PEM (the private key file is created 0600)."""
    serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    Path(public_path).write_bytes(pub)


def _load_private(path: str | os.PathLike):
    serialization, ed25519 = _crypto()
    data = Path(path).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise SignatureError(f"{path}: not a PEM private key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an ed25519 key ({type(key).__name__})")
    return key


def sign_bundle(bundle_dir: str | os.PathLike, private_key: str | os.PathLike) -> Path:
    """Sign ``manifest.json``; writes ``manifest.json.sig`` and returns its path."""
    root = bundle_root(bundle_dir)
    key = _load_private(private_key)
    sig = key.sign((root / MANIFEST_NAME).read_bytes())
    out = root / SIGNATURE_NAME
    out.write_text(base64.b64encode(sig).decode("ascii") + "\n", encoding="ascii")
    return out


__all__ = ["sign_bundle", "generate_keypair"]
