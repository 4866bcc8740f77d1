"""The notification receivers of the notifications probe, each on a loopback port: an SMTP sink
(aiosmtpd), a Twilio Messages API, a Web Push service that checks VAPID (RFC 8292) and decrypts
the payload (RFC 8291, aes128gcm), and a webhook receiver that checks the signature. Each
records what it accepted; none trusts the sender.

Needs `aiosmtpd` and `cryptography`."""

import base64
import collections
import email
import email.header
import hashlib
import hmac
import json
import os
import re
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


# Every message any receiver accepted: (time, channel, the message's own id). For the HTTP
# receivers the time is when the answer went back to the node, not when the request came in:
# under the probe's own load a receiver may take a while to answer, and until it has, the node
# cannot know the message was taken.
ARRIVALS = []
ARRIVALS_LOCK = threading.Lock()
# Messages an HTTP request being answered has accepted (noted once the answer is written).
_ANSWERING = threading.local()


def arrived(channel, message_id):
    answering = getattr(_ANSWERING, "messages", None)
    if answering is not None:
        answering.append((channel, message_id))
        return
    with ARRIVALS_LOCK:
        ARRIVALS.append((time.time(), channel, message_id))


def _answered(messages):
    now = time.time()
    with ARRIVALS_LOCK:
        ARRIVALS.extend((now, channel, message_id) for channel, message_id in messages)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Http:
    """A threaded HTTP server on a loopback port whose POSTs go to `handle(path, headers,
    body) -> (status, json)`."""

    def __init__(self, handle):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                _ANSWERING.messages = []
                try:
                    body = self.rfile.read(int(self.headers.get("content-length") or 0))
                    status, answer = outer.handle(self.path, self.headers, body)
                    raw = json.dumps(answer).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)
                    self.wfile.flush()
                finally:
                    messages, _ANSWERING.messages = _ANSWERING.messages, None
                    _answered(messages)

            def log_message(self, *args):
                pass

        self.handle = handle
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


class Mailbox:
    """SMTP sink: every message as (recipient, subject, Message-ID, text part)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())
        self.controller.start()
        self.port = self.controller.port

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        subject = str(email.header.make_header(email.header.decode_header(message["Subject"] or "")))
        kinds = sorted(part.get_content_type() for part in message.walk() if not part.is_multipart())
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((rcpt.lower(), subject, message["Message-ID"], tuple(kinds)))
        arrived("email", message["Message-ID"])
        return "250 OK"

    def received(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        self.controller.stop()


class Twilio:
    """Twilio's Messages API: checks the account's Basic credentials, records (To, Body)."""

    def __init__(self):
        self.sid = "AC" + uuid.uuid4().hex
        self.token = uuid.uuid4().hex
        self.lock = threading.Lock()
        self.messages = []
        self.http = Http(self.handle)
        self.base = self.http.base

    def handle(self, path, headers, body):
        if path != f"/2010-04-01/Accounts/{self.sid}/Messages.json":
            return 404, {"code": 20404, "message": "not found", "status": 404}
        expected = "Basic " + base64.b64encode(f"{self.sid}:{self.token}".encode()).decode()
        if not hmac.compare_digest(headers.get("authorization", ""), expected):
            return 401, {"code": 20003, "message": "authenticate", "status": 401}
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
        with self.lock:
            self.messages.append((form.get("To", ""), form.get("Body", "")))
        arrived("sms", (form.get("To", ""), form.get("Body", "")))
        sid = "SM" + uuid.uuid4().hex
        return 201, {
            "account_sid": self.sid, "api_version": "2010-04-01", "body": form.get("Body"),
            "direction": "outbound-api", "error_code": None, "error_message": None,
            "from": form.get("From"), "num_media": "0", "num_segments": "1", "sid": sid,
            "status": "queued", "to": form.get("To"),
            "uri": f"/2010-04-01/Accounts/{self.sid}/Messages/{sid}.json",
        }

    def received(self):
        with self.lock:
            return list(self.messages)

    def code_for(self, phone, after):
        """The newest six-digit code texted to `phone` among the messages after index `after`."""
        for to, body in reversed(self.received()[after:]):
            found = re.search(r"\b(\d{6})\b", body)
            if to == phone and found:
                return found.group(1)
        return None


class PushService:
    """A Web Push service. Each subscription is a browser of its own (a P-256 key pair and an
    auth secret); a push must carry a valid VAPID token for this origin signed by the server's
    key and decrypt under the browser's keys. `gone` endpoints answer 410."""

    def __init__(self, server_key):
        self.server_key = server_key
        self.lock = threading.Lock()
        self.browsers = {}
        self.received = []  # (endpoint name, payload)
        self.refused = []  # (endpoint name, why)
        self.gone_hits = collections.Counter()
        self.http = Http(self.handle)
        self.base = self.http.base

    def subscribe(self, gone=False):
        """A new browser's `PushSubscription.toJSON()`."""
        name = ("gone-" if gone else "b-") + uuid.uuid4().hex[:12]
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        auth = os.urandom(16)
        with self.lock:
            self.browsers[name] = (private, public, auth)
        return name, {"endpoint": f"{self.base}/push/{name}", "keys": {"p256dh": b64url(public), "auth": b64url(auth)}}

    def handle(self, path, headers, body):
        name = path.rsplit("/", 1)[-1]
        with self.lock:
            browser = self.browsers.get(name)
        if browser is None:
            return 404, {"error": "no such subscription"}
        why = self.check_vapid(headers.get("authorization", ""))
        if why is None and headers.get("content-encoding") != "aes128gcm":
            why = "content-encoding is not aes128gcm"
        if why is None and not headers.get("ttl"):
            why = "no TTL"
        if why is None and len(headers.get("topic", "")) not in range(1, 33):
            why = "no Topic of at most 32 characters"
        payload = None
        if why is None:
            try:
                payload = json.loads(decrypt(body, *browser))
            except Exception as e:  # noqa: BLE001 - any failure to decrypt is the finding
                why = f"does not decrypt: {e!r}"
        with self.lock:
            if why is not None:
                self.refused.append((name, why))
                return 400, {"error": why}
            if name.startswith("gone-"):
                self.gone_hits[name] += 1
                return 410, {"error": "gone"}
            self.received.append((name, payload))
        arrived("push", payload["id"])
        return 201, {}

    def check_vapid(self, header):
        fields = dict(
            part.strip().split("=", 1) for part in header.removeprefix("vapid ").split(",") if "=" in part
        )
        if not header.startswith("vapid ") or fields.get("k") != self.server_key:
            return "no VAPID authorization with the server's key"
        try:
            head, claims, signature = fields["t"].split(".")
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
            raw = unb64url(signature)
            der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            key.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        except (KeyError, ValueError, InvalidSignature) as e:
            return f"VAPID token does not verify: {e!r}"
        claims = json.loads(unb64url(claims))
        if json.loads(unb64url(head)).get("alg") != "ES256":
            return "VAPID token is not ES256"
        if claims.get("aud") != self.base:
            return f"VAPID audience {claims.get('aud')!r} is not this origin"
        if not (time.time() < claims.get("exp", 0) <= time.time() + 24 * 3600 + 60):
            return "VAPID token expired or lives over a day"
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return "VAPID token has no contact (sub)"
        return None

    def stop(self):
        self.http.stop()


def decrypt(body, private, public, auth):
    """RFC 8291 / RFC 8188: one aes128gcm record for this browser."""
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    sender = body[21 : 21 + idlen]
    record = body[21 + idlen :]
    if len(record) > rs:
        raise ValueError("more than one record")
    shared = private.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender))
    prk_key = hmac.new(auth, shared, hashlib.sha256).digest()
    ikm = hmac.new(prk_key, b"WebPush: info\x00" + public + sender + b"\x01", hashlib.sha256).digest()
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    cek = hmac.new(prk, b"Content-Encoding: aes128gcm\x00\x01", hashlib.sha256).digest()[:16]
    nonce = hmac.new(prk, b"Content-Encoding: nonce\x00\x01", hashlib.sha256).digest()[:12]
    plain = AESGCM(cek).decrypt(nonce, record, None).rstrip(b"\x00")
    if not plain.endswith(b"\x02"):
        raise ValueError("no last-record delimiter")
    return plain[:-1]


class Webhooks:
    """A webhook receiver with the endpoints' secrets: checks `Hexmarket-Signature` over the raw
    body (HMAC-SHA256 of "{t}.{body}", t within five minutes), answers 500 to the first attempt
    of every seventh delivery (to be retried), and records every accepted one."""

    def __init__(self):
        self.lock = threading.Lock()
        self.secrets = {}
        self.accepted = []  # (endpoint name, delivery id, body)
        self.refused = []
        self.attempts = collections.Counter()
        self.http = Http(self.handle)
        self.base = self.http.base

    def url(self, name):
        return f"{self.base}/hooks/{name}"

    def handle(self, path, headers, body):
        name = path.rsplit("/", 1)[-1]
        delivery = headers.get("hexmarket-webhook-id", "")
        with self.lock:
            secret = self.secrets.get(name)
            self.attempts[delivery] += 1
            first = self.attempts[delivery] == 1
        fields = dict(p.split("=", 1) for p in headers.get("hexmarket-signature", "").split(",") if "=" in p)
        why = None
        if secret is None:
            why = "unknown endpoint"
        elif not fields.get("t", "").isdigit() or abs(time.time() - int(fields["t"])) > 300:
            why = "stale or missing timestamp"
        else:
            mac = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
            if not hmac.compare_digest(mac, fields.get("v1", "")):
                why = "bad signature"
        payload = json.loads(body)
        with self.lock:
            if why:
                self.refused.append((name, why))
                return 400, {"error": why}
            if payload.get("id") != delivery:
                self.refused.append((name, "the body's id is not the header's"))
                return 400, {}
            if first and int(uuid.UUID(delivery).hex[-2:], 16) % 7 == 0:
                return 500, {"error": "try again"}
            self.accepted.append((name, delivery, payload))
        arrived("webhook", delivery)
        return 200, {}

    def stop(self):
        self.http.stop()
