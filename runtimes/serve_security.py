"""What stands between a phone on the hotspot and the Pi: upload checks, CSRF and origin checks, the
per-client rate limit and the admin PIN. Pure functions and small classes, so the API tests can hit
each rule directly and through HTTP.

Uploads are judged by their bytes, never by their name or declared type alone: the request must
*say* it is an image (``image/*`` or ``application/octet-stream``), the first bytes must *be* JPEG, PNG
or WebP, the header's width x height must be under the pixel cap *before* any pixel is decoded, and
decoding runs with Pillow's decompression-bomb guard raised to an error and truncated files refused.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import secrets
import threading
import time
import warnings
from dataclasses import dataclass

from lugha.errors import ConfigError, LughaError

# Magic numbers -> Pillow format name. HEIC/AVIF are left out: Pillow cannot decode them without plugins.
_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
ALLOWED_REQUEST_TYPES = ("image/", "application/octet-stream")


class RequestRejected(LughaError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclass(frozen=True)
class UploadPolicy:
    """Limits for one uploaded photo. 12 MB / 40 MP covers any phone camera; the side cap stops a
    1 x 40,000,000 strip that would pass a pixel count but blow up a resize buffer."""

    max_bytes: int = 12 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_side: int = 12_000
    # 16 bits per sample is decoded at twice the size (and no phone camera writes it): a lower cap.
    max_pixels_16bit: int = 16_000_000

    def pixel_cap(self, sixteen_bit: bool) -> int:
        return min(self.max_pixels, self.max_pixels_16bit) if sixteen_bit else self.max_pixels


def sniff_format(data: bytes) -> str | None:
    """The image format the bytes start with (JPEG, PNG, WEBP), or None."""
    for magic, fmt in _MAGIC:
        if data.startswith(magic):
            return fmt
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check_request_type(content_type: str | None) -> None:
    """The declared Content-Type must claim an image (or raw bytes); the content decides which."""
    declared = (content_type or "").split(";")[0].strip().lower()
    if not declared.startswith(ALLOWED_REQUEST_TYPES):
        raise RequestRejected(415, f"Content-Type {declared or '(none)'!r} is not an image upload; "
                                   "send the photo's bytes as image/jpeg, image/png or image/webp")


def decode_upload(data: bytes, policy: UploadPolicy = UploadPolicy()):
    """Validated bytes -> ``(PIL.Image in RGB, format)``; :class:`RequestRejected` naming the rule broken."""
    from PIL import Image

    if len(data) > policy.max_bytes:
        raise RequestRejected(413, f"upload is {len(data)} bytes; the limit is {policy.max_bytes}")
    if not data:
        raise RequestRejected(400, "upload is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise RequestRejected(415, f"upload is not a JPEG, PNG or WebP image (starts with {data[:8]!r})")
    try:
        # formats=[fmt]: only the decoder the magic bytes named may run, never Pillow's guess from a list.
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError:  # Pillow's own guard fires at open for > 2x MAX_IMAGE_PIXELS
        raise RequestRejected(413, f"{fmt} header claims too many pixels to decode safely") from None
    except Exception as e:  # UnidentifiedImageError, SyntaxError from a broken PNG header...
        raise RequestRejected(400, f"{fmt} header cannot be read ({type(e).__name__})") from None
    w, h = im.size
    sixteen = fmt == "PNG" and len(data) > 24 and data[24] == 16  # IHDR bit depth, before any pixel is read
    cap = policy.pixel_cap(sixteen)
    if w * h > cap or max(w, h) > policy.max_side:
        raise RequestRejected(413, f"image is {w}x{h} = {w * h} pixels; the limit is {cap} "
                                   f"pixels{' for 16-bit images' if sixteen else ''} and {policy.max_side} per side")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im.load()  # Pillow refuses truncated files unless ImageFile.LOAD_TRUNCATED_IMAGES is set
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RequestRejected(413, f"image is {w}x{h}: too many pixels to decode safely") from None
    except Exception as e:  # OSError "image file is truncated", SyntaxError, ValueError from a bad chunk
        raise RequestRejected(400, f"{fmt} image cannot be decoded ({str(e).splitlines()[0][:80] or type(e).__name__})"
                              ) from None
    from lugha.preprocess import to_rgb

    return to_rgb(im), fmt


def reencode(image, fmt: str) -> tuple[bytes, str]:
    """Bytes to store for a consented upload: upright RGB with no metadata (EXIF GPS never kept)."""
    buf = io.BytesIO()
    if fmt == "PNG":
        image.save(buf, format="PNG", optimize=False)
        return buf.getvalue(), "png"
    image.save(buf, format="JPEG", quality=92)
    return buf.getvalue(), "jpg"


# --- cross-site requests ------------------------------------------------------------------------------

class CsrfGuard:
    """Session ids and their CSRF tokens. The token is an HMAC of the session id under a per-start
    secret, so nothing is stored per session and a token from one session is useless in another."""

    def __init__(self, secret: bytes | None = None):
        self.secret = secret or secrets.token_bytes(32)

    def token(self, session_id: str) -> str:
        return hmac.new(self.secret, session_id.encode(), hashlib.sha256).hexdigest()

    def check(self, session_id: str | None, token: str | None) -> None:
        if not session_id or not token or not hmac.compare_digest(self.token(session_id), token):
            raise RequestRejected(403, "missing or wrong CSRF token: reload the page and try again")


class SessionIds:
    """Session ids the server issues: 16 random bytes and an HMAC of them under a key kept in the
    database, so an id survives a restart (a tester's consent with it) but a client can neither choose
    one nor make one up; whoever could forge them holds the database already."""

    _RAND, _MAC = 22, 22  # urlsafe base64 of 16 bytes each

    def __init__(self, key: bytes):
        self.key = key

    def _mac(self, rand: str) -> str:
        import base64

        digest = hmac.new(self.key, b"lugha-session\0" + rand.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def new(self) -> str:
        rand = secrets.token_urlsafe(16)
        return rand + self._mac(rand)

    def valid(self, sid: str | None) -> bool:
        if not sid or len(sid) != self._RAND + self._MAC or not sid.isascii():
            return False
        return hmac.compare_digest(self._mac(sid[:self._RAND]), sid[self._RAND:])


def check_same_origin(headers, host: str, scheme: str = "http") -> None:
    """A state-changing request must come from this app's own pages. Browsers always send ``Origin``
    on POST; ``Sec-Fetch-Site`` (when sent) must say same-origin."""
    origin = headers.get("Origin")
    expected = f"{scheme}://{host}"
    if origin is not None and origin != expected:
        raise RequestRejected(403, f"cross-origin request from {origin!r} refused (this app is {expected})")
    if origin is None:
        referer = headers.get("Referer")
        if referer is not None and not (referer == expected or referer.startswith(expected + "/")):
            raise RequestRejected(403, "cross-origin request refused (Referer is another site)")
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        raise RequestRejected(403, f"cross-site request refused (Sec-Fetch-Site: {site})")


def host_allowed(host_header: str | None, bind_host: str, port: int, extra: tuple[str, ...] = ()) -> bool:
    """Refuse Host names the server was not bound to: a page on another site that re-points its DNS
    name at the Pi (DNS rebinding) would otherwise pass every same-origin check."""
    if not host_header:
        return False
    if host_header.startswith("["):  # [::1]:8080
        end = host_header.find("]")
        host, port_text = host_header[1:end], host_header[end + 2:] if end > 0 else ""
    else:
        host, sep, port_text = host_header.rpartition(":")
        if not sep:
            host, port_text = host_header, ""
    if port_text and port_text != str(port):
        return False
    host = host.lower()
    if host in extra:
        return True
    loopback_names = {"localhost", "127.0.0.1", "::1"}
    if bind_host in ("0.0.0.0", "::", ""):
        try:
            ipaddress.ip_address(host)  # any address of this machine; names only when listed
            return True
        except ValueError:
            return host == "localhost"
    if bind_host in loopback_names or bind_host.startswith("127."):
        return host in loopback_names or host == bind_host
    return host == bind_host.lower()


# --- rate limit and PIN -----------------------------------------------------------------------------

class RateLimiter:
    """Token bucket per client key: ``rate`` requests per second on average, bursts up to ``burst``.
    ``rate <= 0`` disables it (the load test measures the server, not the limiter)."""

    def __init__(self, rate: float = 5.0, burst: int = 30, max_clients: int = 4096):
        self.rate, self.burst, self.max_clients = float(rate), int(burst), max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str, cost: float = 1.0, now: float | None = None) -> float:
        """0.0 when allowed, else the seconds to wait before the next try."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                self._evict()
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate

    def _evict(self) -> None:
        if len(self._buckets) > self.max_clients:  # drop the longest-idle half; a full bucket is the default
            for key, _ in sorted(self._buckets.items(), key=lambda kv: kv[1][1])[: self.max_clients // 2]:
                del self._buckets[key]


class PinGate:
    """The admin PIN set at start. No PIN means admin actions are off.

    Two limits on wrong guesses. Per client: 5 per 5 minutes. Global, because a hotspot client can
    change its address at will: after ``global_free`` wrong PINs in a row from any addresses, every PIN
    attempt is refused for a back-off that doubles with each further miss (``backoff_s`` up to
    ``max_backoff_s``), so a 4-digit PIN costs weeks to walk instead of hours. A right PIN ends the
    streak; during a back-off the right PIN is refused too (the operator can restart the server)."""

    def __init__(self, pin: str | None, attempts: int = 5, window_s: float = 300.0, global_free: int = 10,
                 backoff_s: float = 2.0, max_backoff_s: float = 900.0, forget_s: float = 3600.0):
        self.pin = pin or None
        self.attempts, self.window_s = attempts, window_s
        self.global_free, self.backoff_s, self.max_backoff_s, self.forget_s = global_free, backoff_s, max_backoff_s, \
            forget_s
        self._failures: dict[str, list[float]] = {}
        self._streak, self._last_miss, self._locked_until = 0, float("-inf"), float("-inf")
        self._lock = threading.Lock()

    def check(self, client: str, given: str | None, now: float | None = None) -> None:
        if self.pin is None:
            raise RequestRejected(403, "admin actions are off: start `lugha serve` with --pin-file or $LUGHA_SERVE_PIN")
        now = time.monotonic() if now is None else now
        with self._lock:
            if now < self._locked_until:
                raise RequestRejected(429, f"admin is locked after {self._streak} wrong PINs in a row; "
                                           f"wait {int(self._locked_until - now) + 1} s")
            recent = [t for t in self._failures.get(client, []) if now - t < self.window_s]
            self._failures[client] = recent
            if len(recent) >= self.attempts:
                raise RequestRejected(429, f"too many wrong PINs; wait {int(self.window_s - (now - recent[0])) + 1} s")
            if not given or not hmac.compare_digest(given.encode(), self.pin.encode()):
                recent.append(now)
                self._miss(now)
                raise RequestRejected(403, "wrong PIN")
            self._failures.pop(client, None)
            self._streak = 0

    def locked_for(self, now: float | None = None) -> float:
        """Seconds until any PIN is judged again (0.0: not locked)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return max(0.0, self._locked_until - now)

    def _miss(self, now: float) -> None:
        if now - self._last_miss > self.forget_s:  # an hour without a wrong PIN: a fresh start
            self._streak = 0
        self._streak, self._last_miss = self._streak + 1, now
        if self._streak >= self.global_free:
            delay = min(self.backoff_s * 2 ** (self._streak - self.global_free), self.max_backoff_s)
            self._locked_until = now + delay
        if len(self._failures) > 4096:  # addresses are cheap on a hotspot: keep only the ones still counting
            self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] < self.window_s}


def read_pin(pin_file: str | None, environ: dict | None = None) -> str | None:
    """The admin PIN from a file (first line) or ``$LUGHA_SERVE_PIN``, never from the command line, where
    every user of the machine sees it in ``ps``. None: admin actions are off."""
    import os

    if pin_file:
        try:
            with open(pin_file, encoding="utf-8") as f:
                pin = f.readline().strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError("--pin-file", f"{pin_file}: cannot read it ({e})") from None
        if not pin:
            raise ConfigError("--pin-file", f"{pin_file}: the first line is empty")
    else:
        pin = (os.environ if environ is None else environ).get("LUGHA_SERVE_PIN") or None
    if pin is not None and len(pin) < 4:
        raise ConfigError("--pin-file" if pin_file else "LUGHA_SERVE_PIN", "use at least 4 characters (6+ digits is "
                                                                         "better)")
    return pin


__all__ = ["UploadPolicy", "RequestRejected", "sniff_format", "check_request_type", "decode_upload", "reencode",
           "CsrfGuard", "SessionIds", "check_same_origin", "host_allowed", "RateLimiter", "PinGate", "read_pin", "ALLOWED_FORMATS"]
