"""Exports what the checkout peer starts from, through a seeded hexmarket node's public API:

    {"vendors":   [GET /api/v1/vendors/{id} bodies, of every store with a listed product],
     "products":  [GET /api/v1/products search hits: every listed product, with `available`],
     "customers": [{"id", "email", "role"}: the demo customers, from GET /api/v1/admin/users]}

Listing accounts takes an administrator's token: it is minted here with the node's key
(`HEXMARKET_JWT_SECRET`), with the claims hexmarket gives an administrator signed in with a
second factor, as the load generator mints its own.

Usage: HEXMARKET_JWT_SECRET=… python3 checkout_export.py BASE_URL OUT.json
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.parse
import urllib.request
import uuid

import jwt

DEMO_DOMAIN = "demo.hexmarket.dev"


def admin_token(secret: str) -> str:
    now = int(time.time())
    claims = {
        "sub": str(uuid.uuid4()), "role": "admin", "iat": now, "exp": now + 600,
        "iss": "hexmarket", "aud": "hexmarket-api", "jti": str(uuid.uuid4()), "typ": "access",
        "auth_time": now, "amr": ["pwd", "otp", "mfa"],
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def get(base: str, path: str, token: str | None = None) -> dict:
    request = urllib.request.Request(base + path)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def pages(base: str, path: str, field: str, token: str | None = None):
    """Every item of a cursor-paginated listing."""
    cursor = None
    while True:
        more = f"&cursor={urllib.parse.quote(cursor, safe='')}" if cursor else ""
        page = get(base, path + more, token)
        yield from page[field]
        cursor = page.get("next_cursor")
        if not cursor:
            return


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    base, out = sys.argv[1].rstrip("/"), sys.argv[2]
    secret = os.environ.get("HEXMARKET_JWT_SECRET")
    if not secret:
        raise SystemExit("checkout_export: set HEXMARKET_JWT_SECRET, the node's token key")
    # Store by store: a listing's later pages cost more the deeper they are, and one store's
    # catalog is a short listing (a million products paged at once take minutes).
    products = []
    vendors = []
    for store in pages(base, "/api/v1/vendors?limit=100", "items"):
        listed = list(pages(base, f"/api/v1/products?vendor={store['id']}&limit=100&sort=newest",
                            "items"))
        if listed:
            products += listed
            vendors.append(get(base, f"/api/v1/vendors/{store['id']}"))
    token = admin_token(secret)
    email = urllib.parse.quote(f"@{DEMO_DOMAIN}", safe="")
    customers = [
        {"id": u["id"], "email": u["email"], "role": "customer"}
        for u in pages(base, f"/api/v1/admin/users?role=customer&email={email}&limit=100",
                       "users", token)
    ]
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"vendors": vendors, "products": products, "customers": customers}, f)
    print(f"checkout_export: {len(vendors)} vendors, {len(products)} products, "
          f"{len(customers)} customers", file=sys.stderr)


if __name__ == "__main__":
    main()
