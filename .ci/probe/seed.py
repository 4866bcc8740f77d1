#!/usr/bin/env python3
"""Seeds a running hexmarket through its HTTP API, as its users would: an admin (created
beforehand with `hexmarket create-admin`) opens a category; a vendor opens a store near the
customer and lists a published product with stock; a customer and a courier sign up. Writes
what the probes need (ids and each role's fresh access token) as JSON.

    seed.py BASE_URL ADMIN_FILE OUT.json     seed, then write OUT.json
    seed.py BASE_URL tokens SEED.json         log every role in again (tokens last 10 minutes)

ADMIN_FILE holds the admin's email and password on two lines, then what `create-admin` printed:
its `otpauth://` URI gives the secret of the admin's TOTP codes (RFC 6238, computed here).
Standard library only."""

import base64
import hashlib
import hmac
import json
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

PASSWORD = "probe-password-2026"
# The customer's delivery address and the store, 1.5 km apart in Berlin.
HOME = {"text": "Alexanderplatz 1, Berlin", "lat": 52.5219, "lng": 13.4132}
STORE = {"lat": 52.5200, "lng": 13.3950}


class Refused(Exception):
    pass


def call(base, method, path, body=None, token=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def must(expected, result, what):
    status, body = result
    if status not in expected:
        raise Refused(f"{what}: {status} {body}")
    return body


def totp(secret_b32, at=None, step=30, digits=6):
    """RFC 6238 code of a base32 secret (SHA-1, the authenticator apps' default)."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    counter = int((time.time() if at is None else at) // step)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    number = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**digits).zfill(digits)


def otpauth_secret(text):
    """The secret of the first `otpauth://` URI in text, if any."""
    for word in text.split():
        if word.startswith("otpauth://"):
            query = urllib.parse.parse_qs(urllib.parse.urlparse(word).query)
            return query.get("secret", [None])[0]
    return None


def login(base, email, password, totp_secret=None):
    body = {"email": email, "password": password}
    status, answer = call(base, "POST", "/api/v1/auth/login", body)
    if status == 200:
        return answer["access_token"]
    if status == 401 and isinstance(answer, dict) and answer.get("code") == "second_factor_required":
        if not totp_secret:
            raise Refused(f"login of {email} wants a second factor and no TOTP secret is known")
        # A code is taken once per account: wait for a fresh time step when this one was used.
        for _ in range(2):
            status, answer = call(base, "POST", "/api/v1/auth/login", {**body, "otp": totp(totp_secret)})
            if status == 200:
                return answer["access_token"]
            time.sleep(31 - time.time() % 30)
    raise Refused(f"login of {email}: {status} {answer}")


def register(base, role, label):
    email = f"probe-{label}-{uuid.uuid4().hex[:10]}@example.com"
    body = {"email": email, "password": PASSWORD, "name": f"Probe {label}", "role": role}
    account = must([201], call(base, "POST", "/api/v1/auth/register", body), f"register {role}")
    return {"email": email, "password": PASSWORD, "id": account["id"]}


def seed(base, admin_file, out):
    with open(admin_file) as f:
        admin_email = f.readline().strip()
        admin_password = f.readline().strip()
        rest = f.read()
    admin = {
        "email": admin_email,
        "password": admin_password,
        "totp_secret": otpauth_secret(rest),
    }
    admin_token = login(base, admin["email"], admin["password"], admin["totp_secret"])
    category = must(
        [201],
        call(base, "POST", "/api/v1/admin/categories", {"name": f"Probe {uuid.uuid4().hex[:6]}"}, admin_token),
        "category",
    )

    vendor = register(base, "vendor", "vendor")
    vendor_token = login(base, vendor["email"], vendor["password"])
    store = must(
        [201],
        call(
            base,
            "POST",
            "/api/v1/vendors",
            {
                "name": "Probe Kitchen",
                "pickup_address": "Friedrichstrasse 100, Berlin",
                "location": STORE,
                "delivery_radius_km": 8,
            },
            vendor_token,
        ),
        "store",
    )
    product = must(
        [201],
        call(
            base,
            "POST",
            "/api/v1/products",
            {
                "title": "Probe pizza",
                "description": "Seeded for the CI probes",
                "category_id": category["id"],
                "price": {"amount_minor": 1250, "currency": "EUR"},
                "visibility": "published",
            },
            vendor_token,
        ),
        "product",
    )
    must(
        [200],
        call(
            base,
            "PUT",
            f"/api/v1/products/{product['id']}/inventory",
            {"stock": 100000, "reason": "seeded for the probes"},
            vendor_token,
        ),
        "stock",
    )

    customer = register(base, "customer", "customer")
    courier = register(base, "courier", "courier")
    courier_token = login(base, courier["email"], courier["password"])
    must(
        [200],
        call(
            base,
            "PUT",
            "/api/v1/couriers/me/profile",
            {"vehicle": "bicycle", "max_concurrent_orders": 2},
            courier_token,
        ),
        "courier profile",
    )
    seeded = {
        "base": base,
        "home": HOME,
        "category_id": category["id"],
        "vendor_id": store["id"],
        "product_id": product["id"],
        "users": {"admin": admin, "vendor": vendor, "customer": customer, "courier": courier},
    }
    with open(out, "w") as f:
        json.dump(seeded, f, indent=2)
    print(f"seeded: store {store['id']}, product {product['id']}, four roles", file=sys.stderr)


def tokens(base, seeded_file):
    with open(seeded_file) as f:
        seeded = json.load(f)
    fresh = {}
    for role, user in seeded["users"].items():
        fresh[role] = login(base, user["email"], user["password"], user.get("totp_secret"))
    print(json.dumps(fresh))


def main():
    if len(sys.argv) == 4 and sys.argv[2] == "tokens":
        tokens(sys.argv[1], sys.argv[3])
    elif len(sys.argv) == 4:
        seed(*sys.argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    try:
        main()
    except Refused as e:
        sys.exit(f"seed: {e}")
