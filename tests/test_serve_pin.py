"""The admin PIN: a client that changes its address on every guess still meets a global limit, and the
PIN is read from a file or the environment, never from the command line (visible in `ps`)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from test_serve_api import field_bundle  # noqa: F401 (fixture)


def test_cycling_addresses_meets_a_global_limit_and_back_off():
    from lugha.runtimes.serve_security import PinGate, RequestRejected

    gate = PinGate("482193")
    tried = 0  # guesses the gate judged (not refused before comparing) in 5 minutes, one a second
    for second in range(300):
        try:
            gate.check(f"10.42.{second // 250}.{second % 250}", f"{second:06d}", now=float(second))
        except RequestRejected as e:
            tried += e.status == 403
    # per-address limits alone let all 300 through; the global back-off lets through a handful
    assert tried <= 20, f"{tried} guesses judged in 5 minutes from changing addresses"
    with pytest.raises(RequestRejected, match="locked") as e:  # locked: even the right PIN waits
        gate.check("10.99.0.1", "482193", now=300.0)
    assert e.value.status == 429


def test_back_off_doubles_and_a_right_pin_ends_the_streak():
    from lugha.runtimes.serve_security import PinGate, RequestRejected

    gate = PinGate("482193", global_free=3, backoff_s=2.0, max_backoff_s=16.0)
    now, locks = 0.0, []
    for i in range(7):
        with pytest.raises(RequestRejected, match="wrong PIN"):
            gate.check(f"a{i}", "000000", now=now)
        locks.append(gate.locked_for(now))
        if locks[-1]:
            with pytest.raises(RequestRejected, match="locked"):  # during the back-off even the right PIN waits
                gate.check("z", "482193", now=now + locks[-1] / 2)
        now += locks[-1] + 0.1
    assert locks == [0.0, 0.0, 2.0, 4.0, 8.0, 16.0, 16.0]  # free misses, then doubling up to the cap
    gate = PinGate("482193", global_free=3, backoff_s=2.0)
    for i in range(2):
        with pytest.raises(RequestRejected):
            gate.check(f"b{i}", "1", now=float(i))
    gate.check("b9", "482193", now=3.0)  # right: the streak starts over
    for i in range(2):
        with pytest.raises(RequestRejected, match="wrong PIN"):
            gate.check(f"c{i}", "1", now=4.0 + i)


def test_pin_comes_from_a_file_or_the_environment(tmp_path):
    from lugha.errors import ConfigError
    from lugha.runtimes.serve_security import read_pin

    f = tmp_path / "pin"
    f.write_text("482193\n")
    assert read_pin(str(f), {}) == "482193"
    assert read_pin(None, {"LUGHA_SERVE_PIN": "735102"}) == "735102"
    assert read_pin(None, {}) is None
    f.write_text("12\n")
    with pytest.raises(ConfigError, match="4 characters"):
        read_pin(str(f), {})
    with pytest.raises(ConfigError, match="cannot read"):
        read_pin(str(tmp_path / "missing"), {})


def _serve(bundle, tmp_path, *extra):
    cmd = [sys.executable, "-m", "lugha.cli", "serve", str(bundle), "--port", "0", "--db",
           str(tmp_path / "f.sqlite"), "--quiet", *extra]
    env = {**os.environ, "LUGHA_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("LUGHA_SERVE_PIN", None)  # only the PIN the test gives
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_cli_refuses_a_pin_on_the_command_line_and_warns_over_http(field_bundle, tmp_path):  # noqa: F811
    proc = _serve(field_bundle, tmp_path, "--pin", "482193")
    try:
        out, _ = proc.communicate(timeout=60)  # today's server must stop at once, not start serving
    finally:
        proc.kill()
    assert proc.returncode != 0 and "ps" in out and "--pin-file" in out, out
    pin_file = tmp_path / "pin"
    pin_file.write_text("482193\n")
    proc = _serve(field_bundle, tmp_path, "--pin-file", str(pin_file))
    try:
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "listening on" in line:
                break
    finally:
        proc.kill()
        proc.communicate()
    text = "".join(lines)
    assert "listening on http://" in text and "in clear" in text and "482193" not in text, text
