"""Checking a bundle's ed25519 signature before anything in it is loaded (folder or zip).

``lugha export --sign`` writes ``manifest.json.sig``: a signature over manifest.json, which holds every
other file's SHA-256, so a good signature plus good hashes means the publisher's bundle, byte for byte.

Whose signature counts: the key given as ``--pubkey`` (``pubkey=``), else every ``*.pem`` in the config
folder's ``trusted_keys/`` (``lugha.paths.config_dir()``, e.g. ``~/.config/lugha/trusted_keys/``). When
either is set, an unsigned or mis-signed bundle is refused by ``open_bundle`` (so ``serve`` and ``bench``),
``doctor`` and ``bundle verify``; when neither is, bundles are checked by hash only, as before. Needs the
``cryptography`` package only when a key is in play.
"""
from __future__ import annotations

import base64
import os
import zipfile
from pathlib import Path

from lugha.errors import BundleError, MissingDependencyError
from lugha.manifest import MANIFEST_NAME, bundle_root
from lugha.paths import config_dir
from lugha.runtimes.bundle_zip import check_central_directory, manifest_member

SIGNATURE_NAME = "manifest.json.sig"  # beside manifest.json; base64 of the 64-byte ed25519 signature
TRUSTED_KEYS = "trusted_keys"


class SignatureError(BundleError):
    """A bundle signature that is missing, malformed or made by none of the trusted keys."""


def trusted_keys(pubkey: str | os.PathLike | None = None) -> list[Path]:
    """The keys a bundle must be signed by: ``[pubkey]`` when given, else the config folder's
    ``trusted_keys/*.pem`` (sorted), else ``[]`` (no signature required)."""
    if pubkey is not None:
        return [Path(pubkey)]
    folder = config_dir() / TRUSTED_KEYS
    return sorted(folder.glob("*.pem")) if folder.is_dir() else []


def _load_public(path: Path):
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise MissingDependencyError("checking bundle signatures needs the 'cryptography' package: "
                                     "pip install cryptography") from None
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise SignatureError(f"{path}: public key not found") from None
    except (ValueError, TypeError) as e:
        raise SignatureError(f"{path}: not a PEM public key ({e})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path}: not an ed25519 public key ({type(key).__name__})")
    return key


def verify_signature_bytes(manifest: bytes, signature: bytes | None, keys: list[Path], where: str) -> Path:
    """The key (of ``keys``) that signed ``manifest``; :class:`SignatureError` when none did."""
    from cryptography.exceptions import InvalidSignature

    loaded = [(k, _load_public(k)) for k in keys]  # a bad key file is an error even if another key matches
    if signature is None:
        raise SignatureError(f"{where}: no {SIGNATURE_NAME}: the bundle is not signed, and a signature by "
                             f"{_names(keys)} is required")
    try:
        sig = base64.b64decode(signature.decode("ascii").strip(), validate=True)
    except (ValueError, UnicodeDecodeError):
        raise SignatureError(f"{where}: {SIGNATURE_NAME} is not a base64 signature") from None
    for path, key in loaded:
        try:
            key.verify(sig, manifest)
            return path
        except InvalidSignature:
            continue
    raise SignatureError(f"{where}: {SIGNATURE_NAME} does not match {MANIFEST_NAME} for {_names(keys)} "
                         "(a tampered manifest, or signed by another key)")


def _names(keys: list[Path]) -> str:
    return ", ".join(str(k) for k in keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


def verify_folder(root: str | os.PathLike, keys: list[Path]) -> Path:
    root = bundle_root(root)
    sig = root / SIGNATURE_NAME
    try:
        manifest = (root / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{root}: no {MANIFEST_NAME} (is this a bundle folder?)") from None
    return verify_signature_bytes(manifest, sig.read_bytes() if sig.is_file() else None, keys, str(root))


def verify_zip(path: str | os.PathLike, keys: list[Path]) -> Path:
    """The signature of a zipped bundle, read from the zip (central directory checked, nothing extracted)."""
    path = Path(path)
    with zipfile.ZipFile(path) as z:
        names = [i.filename for i in check_central_directory(z, path.name)]
        member = manifest_member(names)
        sig_member = member[: -len(MANIFEST_NAME)] + SIGNATURE_NAME
        signature = z.read(sig_member) if sig_member in names else None
        return verify_signature_bytes(z.read(member), signature, keys, str(path))


def is_zip_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_file() and p.name != MANIFEST_NAME and zipfile.is_zipfile(p)


def check_bundle_trust(path: str | os.PathLike, pubkey: str | os.PathLike | None = None) -> Path | None:
    """Refuse ``path`` (folder, manifest.json or zip) unless signed by a trusted key; the key that signed
    it, or None when no key is configured (then nothing is required)."""
    keys = trusted_keys(pubkey)
    if not keys:
        return None
    return verify_zip(path, keys) if is_zip_bundle(path) else verify_folder(path, keys)


__all__ = ["SIGNATURE_NAME", "SignatureError", "check_bundle_trust", "is_zip_bundle", "trusted_keys",
           "verify_folder", "verify_signature_bytes", "verify_zip"]
