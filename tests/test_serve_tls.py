"""https for the field app: --self-signed (a private CA + server certificate beside the database), an
operator's own --tls-cert/--tls-key, and pages fetched over https by a client that trusts only that CA."""
from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lugha.errors import ConfigError

from test_serve_api import field_bundle  # noqa: F401 (fixture)

pytest.importorskip("cryptography", reason="--self-signed needs the cryptography package")


def _client_ctx(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))  # hostname checked against the certificate's SANs
    return ctx


def _get(host: str, port: int, path: str, ctx: ssl.SSLContext) -> tuple[int, dict, bytes]:
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()  # names are case-insensitive
    finally:
        conn.close()


def test_self_signed_files_fingerprint_and_reuse(tmp_path):
    from cryptography import x509

    from lugha.runtimes.serve_tls import self_signed, tls_folder

    folder = tls_folder(tmp_path / "field.sqlite")
    assert folder == tmp_path / "field.tls"
    first = self_signed(folder, ["192.168.4.1", "pi.local", "127.0.0.1"])
    assert first.created and first.ca_cert == folder / "ca.crt"
    assert (folder / "server.key").stat().st_mode & 0o077 == 0, "server.key is readable by others"
    ca = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate(first.cert.read_bytes())  # the first PEM of the chain file
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(i) for i in san.get_values_for_type(x509.IPAddress)} == {"192.168.4.1", "127.0.0.1"}
    assert san.get_values_for_type(x509.DNSName) == ["pi.local"]
    assert leaf.issuer == ca.subject and (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days <= 398
    der = ssl.PEM_cert_to_DER_cert((folder / "ca.crt").read_text())
    assert first.fingerprint == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    # a restart reuses them (phones trust the CA once); a host they do not cover makes new ones
    again = self_signed(folder, ["192.168.4.1", "127.0.0.1"])
    assert not again.created and again.fingerprint == first.fingerprint
    other = self_signed(folder, ["10.0.0.1"])
    assert other.created and other.fingerprint != first.fingerprint


def test_ca_is_name_constrained_short_lived_and_its_key_is_not_kept(tmp_path, monkeypatch):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    from lugha.runtimes.serve_tls import self_signed

    made = []  # every private key self_signed makes: the first is the CA's
    real = ec.generate_private_key
    monkeypatch.setattr(ec, "generate_private_key", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    folder = tmp_path / "field.tls"
    (folder).mkdir()
    (folder / "ca.key").write_text("an older lugha kept the CA key here")
    tls = self_signed(folder, ["192.168.4.1", "pi.local"])
    assert tls.created and not (folder / "ca.key").exists()
    stored = b"".join(p.read_bytes() for p in folder.iterdir())
    assert stored.count(b"PRIVATE KEY-----") == 2  # BEGIN + END of server.key: no CA key on disk
    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    nc = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and {str(t.value) for t in nc.value.permitted_subtrees} == {"192.168.4.1/32", "pi.local"}
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days <= 400
    # what the constraint is for: had the CA key been taken, a certificate for another site is refused
    ca_key = made[0]
    now = ca.not_valid_before_utc
    evil = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca.subject)
            .public_key(real(ec.SECP256R1()).public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    when = now + dt.timedelta(days=1)
    verifier = PolicyBuilder().store(Store([ca])).time(when)
    with pytest.raises(VerificationError, match="name constraint|no permitted"):
        verifier.build_server_verifier(x509.DNSName("bank.example")).verify(evil, [])
    leaf = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    verifier.build_server_verifier(x509.DNSName("pi.local")).verify(leaf, [])  # the served name still passes


def test_a_torn_set_of_tls_files_is_made_again(tmp_path):
    from lugha.runtimes.serve_tls import self_signed, server_context

    folder = tmp_path / "field.tls"
    first = self_signed(folder, ["127.0.0.1"])
    other = self_signed(tmp_path / "other", ["127.0.0.1"])
    (folder / "server.key").write_bytes(other.key.read_bytes())  # a crash between two renames: key and cert differ
    again = self_signed(folder, ["127.0.0.1"])
    assert again.created and again.fingerprint != first.fingerprint
    server_context(again.cert, again.key)  # a usable pair again
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_given_files_are_checked_at_start(tmp_path):
    from lugha.runtimes.serve_tls import given_files, self_signed

    made = self_signed(tmp_path / "tls", ["127.0.0.1"])
    own = given_files(made.cert, made.key)
    assert own.ca_cert is None and len(own.fingerprint) == 95
    with pytest.raises(ConfigError, match="--tls-key"):
        given_files(made.cert, tmp_path / "missing.key")
    with pytest.raises(ConfigError, match="not a certificate"):
        given_files(made.cert, made.cert)  # a certificate is not a key


def test_pages_over_https_trusting_only_the_ca(field_bundle, tmp_path):  # noqa: F811
    from lugha.runtimes.serve_app import FieldApp, make_server
    from lugha.runtimes.serve_db import FeedbackDB
    from lugha.runtimes.serve_engine import FieldEngine
    from lugha.runtimes.serve_tls import self_signed

    tls = self_signed(tmp_path / "tls", ["127.0.0.1", "localhost"])
    db = FeedbackDB(tmp_path / "feedback.sqlite")
    app = FieldApp(FieldEngine(field_bundle, cache_dir=tmp_path / "cache"), db, quiet=True, tls=True, ca_cert=tls.ca_cert)
    server = make_server(app, "127.0.0.1", 0, tls.cert, tls.key)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ctx = _client_ctx(tls.ca_cert)
        status, headers, body = _get("127.0.0.1", port, "/", ctx)
        assert status == 200 and b"<title>Lugha</title>" in body
        status, headers, _ = _get("127.0.0.1", port, "/api/config", ctx)
        assert status == 200 and "Secure" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        status, headers, body = _get("127.0.0.1", port, "/ca.crt", ctx)
        assert status == 200 and headers["content-type"] == "application/x-x509-ca-cert"
        assert body == tls.ca_cert.read_bytes() and b"PRIVATE" not in body
        # a client that trusts only the system's CAs refuses it; plain http to the https port gets nothing
        with pytest.raises(ssl.SSLCertVerificationError):
            _get("127.0.0.1", port, "/", ssl.create_default_context())
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            plain.request("GET", "/")
            plain.getresponse().read()
        plain.close()
        status, _, _ = _get("127.0.0.1", port, "/", ctx)  # the server is still serving after that
        assert status == 200
    finally:
        server.shutdown()
        server.server_close()
        db.close()


def test_cli_self_signed_prints_the_fingerprint_and_serves_https(field_bundle, tmp_path):  # noqa: F811
    db = tmp_path / "field.sqlite"
    env = {**os.environ, "LUGHA_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "lugha.cli", "serve", str(field_bundle), "--port", "0", "--db", str(db),
                             "--self-signed", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines, deadline = [], time.monotonic() + 60
        while time.monotonic() < deadline and not any("listening on" in x for x in lines):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
        text = "".join(lines)
        assert "listening on https://127.0.0.1:" in text, text + proc.stderr.read() if proc.poll() is not None else text
        fp = next(x for x in lines if "fingerprint" in x).split()[-1]
        ca = tmp_path / "field.tls" / "ca.crt"
        der = ssl.PEM_cert_to_DER_cert(ca.read_text())
        assert fp == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        port = int(text.split("listening on https://127.0.0.1:")[1].split("/")[0])
        status, _, body = _get("127.0.0.1", port, "/", _client_ctx(ca))
        assert status == 200 and b"<title>Lugha</title>" in body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_cli_rejects_conflicting_tls_flags(field_bundle, tmp_path):  # noqa: F811
    from lugha.cli import main

    base = ["serve", str(field_bundle), "--port", "0", "--db", str(tmp_path / "f.sqlite")]
    assert main(base + ["--self-signed", "--tls-cert", "a.crt", "--tls-key", "a.key"]) != 0
    assert main(base + ["--tls-cert", "a.crt"]) != 0
    assert main(base + ["--self-signed", "--host", "0.0.0.0"]) != 0
    assert not (tmp_path / "f.tls").exists()
