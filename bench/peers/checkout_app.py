"""Peer for the checkout benchmark: FastAPI + asyncpg over PostgreSQL, the design a team would
write instead of hexmarket's actors.

It serves the part of hexmarket's API that `hexmarket-loadgen checkout` drives, with the same
paths, JSON shapes and problem codes, so the unchanged load generator runs against it:

    GET    /health
    GET    /api/v1/admin/users?role=&email=&limit=&cursor=   (admin with a second factor)
    GET    /api/v1/products?near=lat,lng&radius_km=&q=&limit=&cursor=
    GET    /api/v1/vendors/{id}
    GET    /api/v1/products/{id}/inventory                   (the product's vendor, or an admin)
    PUT    /api/v1/products/{id}/inventory                   {"stock": n, "reason": "…"}
    GET    /api/v1/cart, DELETE /api/v1/cart
    POST   /api/v1/cart/items                                {"product_id", "quantity"}
    POST   /api/v1/checkout                                  Idempotency-Key header
    POST   /api/v1/payments/{id}/simulate                    {"outcome": "succeed" | "fail"}

Every write is one PostgreSQL transaction, committed before the answer (the server must run
with `synchronous_commit = on` and `fsync = on`; the peer refuses to start otherwise):

- a cart add is one statement (the product must be listed; at most 50 lines, 99 units each);
- a checkout claims its idempotency row (a retry with the same key gets the first answer,
  a concurrent one waits on the row and then gets it too), locks the cart lines and their
  product rows (`SELECT … FOR NO KEY UPDATE`, in product order: the row lock that `UPDATE`
  itself takes, so foreign-key checks of other carts are not blocked), checks the stock,
  holds it (`held += quantity`), writes one order per store with its lines, totals and
  delivery fee, one payment, empties the cart and records the answer. A refusal (empty cart,
  short stock) writes only the idempotency row with the refusal, as hexmarket records it;
- a simulated payment success marks the checkout's orders paid and sells the held units
  (`stock -= q`, `held -= q`, `sold_total += q`);
- holds of orders unpaid by their deadline (15 minutes, hexmarket's default) are given back by
  a sweep every 30 s, which also forgets idempotency keys older than a day.

Access tokens are checked as hexmarket checks them: HS256 only, signature with
`HEXMARKET_JWT_SECRET`, issuer `hexmarket`, audience `hexmarket-api`, `exp`, `iss`, `aud`, `sub`
and `iat` required, 30 s of leeway, `typ` `access`; the caller is `sub`, with the token's role.
Guest carts (`X-Cart-Token`) and coupons are not served.

At start it creates its tables afresh and loads the export of a seeded hexmarket node
(`checkout_export.py`): `{"vendors": [vendor bodies], "products": [search hits],
"customers": [{"id", "email"}]}`; a product's stock is its `available` units.

One uvicorn worker, no access log, uvloop and httptools when installed.

Usage: HEXMARKET_JWT_SECRET=… python3 checkout_app.py EXPORT.json --dsn postgresql://…
    [--host 127.0.0.1] [--port 18486] [--pool-size 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import hashlib
import json
import math
import os
import sys
import uuid
from typing import Any

import asyncpg
import jwt
import uvicorn
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

ISSUER = "hexmarket"
AUDIENCE = "hexmarket-api"
LEEWAY_S = 30
PROBLEM_JSON = "application/problem+json"
MAX_CART_LINES = 50
MAX_QUANTITY = 99
MAX_STOCK = 1_000_000
MAX_KEY = 200
RECENT_ADJUSTMENTS = 20
SEARCH_LIMIT_DEFAULT = 20
DEFAULT_RADIUS_KM = 5.0
# hexmarket's default platform settings: the delivery fee table (euro cents), the rates frozen
# on each order, and how long an unpaid order holds its stock.
FEE_BASE_CENTS, FEE_INCLUDED_M, FEE_PER_KM_CENTS, FEE_CAP_CENTS = 199, 2_000, 50, 1_499
RATES = {"commission_bps": 1_500, "courier_fee_bps": 8_000}
PAYMENT_TIMEOUT = datetime.timedelta(seconds=900)
IDEMPOTENCY_TTL = datetime.timedelta(hours=24)
SWEEP_EVERY_S = 30
EARTH_RADIUS_M = 6_371_008.8
MINOR_DIGITS = {"JPY": 0, "KWD": 3, "BHD": 3}

SCHEMA = """
DROP TABLE IF EXISTS idempotency, stock_adjustments, order_lines, orders, payments, cart_lines,
    products, vendors, users CASCADE;
CREATE TABLE users (
    id uuid PRIMARY KEY,
    email text NOT NULL UNIQUE,
    role text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE vendors (
    id uuid PRIMARY KEY,
    owner uuid NOT NULL,
    name text NOT NULL,
    lat double precision NOT NULL,
    lng double precision NOT NULL,
    delivery_radius_km double precision NOT NULL,
    status text NOT NULL,
    body jsonb NOT NULL
);
CREATE TABLE products (
    id uuid PRIMARY KEY,
    vendor_id uuid NOT NULL REFERENCES vendors,
    title text NOT NULL,
    category_id uuid,
    price_minor bigint NOT NULL CHECK (price_minor >= 0),
    currency text NOT NULL,
    visibility text NOT NULL,
    created_at timestamptz NOT NULL,
    stock integer NOT NULL CHECK (stock BETWEEN 0 AND 1000000),
    held integer NOT NULL DEFAULT 0 CHECK (held BETWEEN 0 AND stock),
    sold_total bigint NOT NULL DEFAULT 0
);
CREATE INDEX products_newest ON products (created_at DESC, id DESC);
CREATE INDEX products_vendor ON products (vendor_id);
CREATE TABLE stock_adjustments (
    id uuid PRIMARY KEY,
    product_id uuid NOT NULL REFERENCES products,
    at timestamptz NOT NULL,
    kind text NOT NULL,
    amount bigint NOT NULL,
    stock_before integer NOT NULL,
    stock_after integer NOT NULL,
    reason text NOT NULL,
    by_user uuid NOT NULL
);
CREATE INDEX stock_adjustments_product ON stock_adjustments (product_id, at);
CREATE TABLE cart_lines (
    user_id uuid NOT NULL REFERENCES users,
    product_id uuid NOT NULL REFERENCES products,
    quantity integer NOT NULL CHECK (quantity BETWEEN 1 AND 99),
    added_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (user_id, product_id)
);
CREATE TABLE payments (
    id uuid PRIMARY KEY,
    checkout_id uuid NOT NULL UNIQUE,
    payer uuid NOT NULL REFERENCES users,
    amount_minor bigint NOT NULL,
    currency text NOT NULL,
    provider text NOT NULL,
    status text NOT NULL,
    provider_ref text NOT NULL UNIQUE,
    refunded_minor bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id uuid PRIMARY KEY,
    checkout_id uuid NOT NULL,
    customer_id uuid NOT NULL REFERENCES users,
    vendor_id uuid NOT NULL REFERENCES vendors,
    payment_id uuid NOT NULL REFERENCES payments,
    status text NOT NULL,
    subtotal_minor bigint NOT NULL,
    delivery_fee_minor bigint NOT NULL,
    total_minor bigint NOT NULL,
    currency text NOT NULL,
    address text NOT NULL,
    lat double precision NOT NULL,
    lng double precision NOT NULL,
    commission_bps integer NOT NULL,
    courier_fee_bps integer NOT NULL,
    expires_at timestamptz NOT NULL,
    paid_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX orders_checkout ON orders (checkout_id);
CREATE INDEX orders_customer ON orders (customer_id, created_at);
CREATE INDEX orders_unpaid ON orders (expires_at) WHERE status = 'pending_payment';
CREATE TABLE order_lines (
    order_id uuid NOT NULL REFERENCES orders ON DELETE CASCADE,
    product_id uuid NOT NULL REFERENCES products,
    title text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price_minor bigint NOT NULL,
    currency text NOT NULL,
    PRIMARY KEY (order_id, product_id)
);
CREATE TABLE idempotency (
    user_id uuid NOT NULL,
    key text NOT NULL,
    request text NOT NULL,
    status smallint,
    body text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
"""

# --- statements ---------------------------------------------------------------------------

CLAIM_KEY = """
INSERT INTO idempotency (user_id, key, request) VALUES ($1, $2, $3)
ON CONFLICT (user_id, key) DO NOTHING RETURNING 1
"""
READ_KEY = "SELECT request, status, body FROM idempotency WHERE user_id = $1 AND key = $2"
RECORD_ANSWER = "UPDATE idempotency SET status = $3, body = $4 WHERE user_id = $1 AND key = $2"
# The cart with its products, cart lines and product rows locked in product order (so two
# checkouts of the same products queue instead of deadlocking).
CART_FOR_CHECKOUT = """
SELECT c.product_id, c.quantity, p.title, p.price_minor, p.currency, p.stock, p.held,
       p.visibility = 'published' AND v.status = 'active' AS listed,
       p.vendor_id, v.name AS vendor_name, v.lat, v.lng, v.delivery_radius_km
FROM cart_lines c
JOIN products p ON p.id = c.product_id
JOIN vendors v ON v.id = p.vendor_id
WHERE c.user_id = $1
ORDER BY p.id
FOR NO KEY UPDATE OF c, p
"""
HOLD_STOCK = """
UPDATE products p SET held = p.held + x.quantity
FROM unnest($1::uuid[], $2::int[]) AS x(product_id, quantity)
WHERE p.id = x.product_id
"""
INSERT_PAYMENT = """
INSERT INTO payments (id, checkout_id, payer, amount_minor, currency, provider, status,
                      provider_ref, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, 'simulated', 'pending', $6, $7, $7)
"""
INSERT_ORDERS = """
INSERT INTO orders (id, checkout_id, customer_id, vendor_id, payment_id, status, subtotal_minor,
                    delivery_fee_minor, total_minor, currency, address, lat, lng,
                    commission_bps, courier_fee_bps, expires_at, created_at, updated_at)
SELECT o.id, $2, $3, o.vendor_id, $4, 'pending_payment', o.subtotal, o.fee, o.total, $5, $6, $7,
       $8, $9, $10, $11, $12, $12
FROM unnest($1::uuid[], $13::uuid[], $14::bigint[], $15::bigint[], $16::bigint[])
     AS o(id, vendor_id, subtotal, fee, total)
"""
INSERT_LINES = """
INSERT INTO order_lines (order_id, product_id, title, quantity, unit_price_minor, currency)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::int[], $5::bigint[], $6::text[])
"""
EMPTY_CART_LINES = "DELETE FROM cart_lines WHERE user_id = $1 AND product_id = ANY($2::uuid[])"
# One statement: listed product, line limit, quantities adding up (the CHECK refuses > 99).
ADD_TO_CART = """
INSERT INTO cart_lines (user_id, product_id, quantity)
SELECT $1, p.id, $3
FROM products p JOIN vendors v ON v.id = p.vendor_id
WHERE p.id = $2 AND p.visibility = 'published' AND v.status = 'active'
  AND (EXISTS (SELECT 1 FROM cart_lines WHERE user_id = $1 AND product_id = $2)
       OR (SELECT count(*) FROM cart_lines WHERE user_id = $1) < $4)
ON CONFLICT (user_id, product_id) DO UPDATE SET quantity = cart_lines.quantity + EXCLUDED.quantity
RETURNING quantity
"""
PRODUCT_LISTED = """
SELECT 1 FROM products p JOIN vendors v ON v.id = p.vendor_id
WHERE p.id = $1 AND p.visibility = 'published' AND v.status = 'active'
"""
CART_VIEW = """
SELECT c.product_id, c.quantity, p.title, p.vendor_id, v.name AS vendor_name, p.price_minor,
       p.currency, greatest(p.stock - p.held, 0) AS available,
       p.visibility = 'published' AND v.status = 'active' AS listed
FROM cart_lines c
JOIN products p ON p.id = c.product_id
JOIN vendors v ON v.id = p.vendor_id
WHERE c.user_id = $1
ORDER BY c.added_at, c.product_id
"""
INVENTORY_ROW = """
SELECT p.stock, p.held, p.sold_total, v.owner
FROM products p JOIN vendors v ON v.id = p.vendor_id
WHERE p.id = $1
"""
INVENTORY_ROW_LOCKED = INVENTORY_ROW + " FOR NO KEY UPDATE OF p"
RECENT = """
SELECT * FROM (
    SELECT id, at, kind, amount, stock_before, stock_after, reason, by_user
    FROM stock_adjustments WHERE product_id = $1 ORDER BY at DESC, id DESC LIMIT $2
) recent ORDER BY at, id
"""
PAYMENT_LOCKED = "SELECT * FROM payments WHERE id = $1 FOR NO KEY UPDATE"
# The units each product sold with the checkout's unpaid orders (the orders become paid).
PAY_ORDERS = """
WITH paid AS (
    UPDATE orders SET status = 'paid', paid_at = $2, updated_at = $2
    WHERE checkout_id = $1 AND status = 'pending_payment'
    RETURNING id
)
SELECT l.product_id, sum(l.quantity)::int AS quantity
FROM order_lines l JOIN paid ON paid.id = l.order_id
GROUP BY l.product_id ORDER BY l.product_id
"""
LOCK_PRODUCTS = "SELECT id FROM products WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE"
SELL_STOCK = """
UPDATE products p SET stock = p.stock - x.quantity, held = p.held - x.quantity,
       sold_total = p.sold_total + x.quantity
FROM unnest($1::uuid[], $2::int[]) AS x(product_id, quantity)
WHERE p.id = x.product_id
"""
EXPIRE_ORDERS = """
WITH expired AS (
    SELECT id FROM orders WHERE status = 'pending_payment' AND expires_at < $1
    ORDER BY expires_at LIMIT 1000 FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE orders o SET status = 'expired', updated_at = $1 FROM expired WHERE o.id = expired.id
    RETURNING o.id
)
SELECT l.product_id, sum(l.quantity)::int AS quantity
FROM order_lines l JOIN marked ON marked.id = l.order_id
GROUP BY l.product_id ORDER BY l.product_id
"""
RELEASE_STOCK = """
UPDATE products p SET held = greatest(p.held - x.quantity, 0)
FROM unnest($1::uuid[], $2::int[]) AS x(product_id, quantity)
WHERE p.id = x.product_id
"""
SEARCH_NEAR = """
SELECT p.id, p.title, p.vendor_id, v.name AS vendor_name, p.category_id, p.price_minor,
       p.currency, greatest(p.stock - p.held, 0) AS available, p.visibility, p.created_at,
       count(*) OVER () AS total
FROM products p JOIN vendors v ON v.id = p.vendor_id
WHERE p.visibility = 'published' AND v.status = 'active'
  AND ($1::float8 IS NULL OR 2 * {r} * asin(sqrt(
        power(sin(radians(v.lat - $1) / 2), 2)
        + cos(radians($1)) * cos(radians(v.lat)) * power(sin(radians(v.lng - $2) / 2), 2)
      )) <= $3)
  AND ($4::text IS NULL OR p.title ILIKE '%' || $4 || '%')
ORDER BY p.created_at DESC, p.id DESC
LIMIT $5 OFFSET $6
""".format(r=EARTH_RADIUS_M)
LIST_USERS = """
SELECT id, email, role, created_at FROM users
WHERE ($1::text IS NULL OR role = $1)
  AND ($2::text IS NULL OR strpos(lower(email), lower($2)) > 0)
  AND ($3::uuid IS NULL OR id > $3)
ORDER BY id LIMIT $4
"""


# --- problems, time, money ----------------------------------------------------------------


class Problem(Exception):
    """An RFC 9457 answer with hexmarket's stable `code`."""

    TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
              409: "Conflict", 422: "Unprocessable Entity", 500: "Internal Server Error"}

    def __init__(self, status: int, code: str, detail: str, errors: list[dict] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.errors = status, code, detail, errors

    def body(self) -> dict[str, Any]:
        body = {
            "type": f"https://hexmarket.dev/problems/{self.code.replace('_', '-')}",
            "title": self.TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = self.errors
        return body

    def json(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"))

    def response(self) -> Response:
        return Response(self.json(), status_code=self.status, media_type=PROBLEM_JSON)


def not_found(what: str) -> Problem:
    return Problem(404, "not_found", what)


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def rfc3339(at: datetime.datetime | None) -> str | None:
    if at is None:
        return None
    return at.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def money(amount_minor: int, currency: str) -> dict[str, Any]:
    return {"amount_minor": amount_minor, "currency": currency}


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Haversine on the mean Earth radius, as hexmarket measures delivery distances."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def delivery_fee(distance: float, currency: str) -> int:
    """The default fee table: the base fee up to 2 km, then per started km, capped."""
    extra_km = math.ceil((distance - FEE_INCLUDED_M) / 1000) if distance > FEE_INCLUDED_M else 0
    cents = min(FEE_BASE_CENTS + extra_km * FEE_PER_KM_CENTS, FEE_CAP_CENTS)
    digits = MINOR_DIGITS.get(currency, 2)
    return (cents + 50) // 100 if digits == 0 else cents * 10 if digits == 3 else cents


def parse_uuid(raw: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise Problem(400, "invalid_path", f"{what} is not a UUID") from None


# --- callers ------------------------------------------------------------------------------


class Caller:
    __slots__ = ("id", "role", "amr")

    def __init__(self, user_id: uuid.UUID, role: str, amr: list[str]):
        self.id, self.role, self.amr = user_id, role, amr

    def require_role(self, role: str) -> None:
        if self.role != role:
            raise Problem(403, "forbidden", f"this needs the {role} role")

    def is_admin(self) -> bool:
        return self.role == "admin" and "mfa" in self.amr


class Tokens:
    """hexmarket's access-token rules, on PyJWT."""

    def __init__(self, secret: str):
        self.key = secret.encode()

    def caller(self, authorization: str | None) -> Caller:
        refused = Problem(401, "unauthenticated", "a valid access token is required")
        if not authorization:
            raise refused
        scheme, _, token = authorization.partition(" ")
        if scheme not in ("Bearer", "bearer") or not token.strip():
            raise refused
        try:
            claims = jwt.decode(
                token.strip(), self.key, algorithms=["HS256"], audience=AUDIENCE,
                issuer=ISSUER, leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub", "iat"]},
            )
            if claims.get("typ") != "access" or not isinstance(claims.get("role"), str):
                raise refused
            return Caller(uuid.UUID(claims["sub"]), claims["role"], list(claims.get("amr") or []))
        except (jwt.InvalidTokenError, ValueError, TypeError, AttributeError):
            raise refused from None


# --- request bodies -----------------------------------------------------------------------


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AddItem(Strict):
    product_id: uuid.UUID
    quantity: int = Field(ge=1, le=MAX_QUANTITY)


class StockUpdate(Strict):
    stock: int | None = None
    delta: int | None = None
    reason: str = Field(min_length=1, max_length=200)


class Address(Strict):
    text: str = Field(min_length=1, max_length=300)
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class CheckoutRequest(Strict):
    delivery_address: Address
    payment_method: str
    coupon_code: str | None = None


class Simulate(Strict):
    outcome: str


# --- views --------------------------------------------------------------------------------


def payment_view(p: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(p["id"]),
        "checkout_id": str(p["checkout_id"]),
        "payer": str(p["payer"]),
        "amount": money(p["amount_minor"], p["currency"]),
        "provider": p["provider"],
        "status": p["status"],
        "provider_ref": p["provider_ref"],
        "refunded_minor": p["refunded_minor"],
        "created_at": rfc3339(p["created_at"]),
        "updated_at": rfc3339(p["updated_at"]),
    }


def adjustment_view(a: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": str(a["id"]),
        "at": rfc3339(a["at"]),
        "change": {a["kind"]: a["amount"]},
        "stock_before": a["stock_before"],
        "stock_after": a["stock_after"],
        "reason": a["reason"],
        "by": str(a["by_user"]),
    }


def inventory_view(row: asyncpg.Record, recent: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "stock": row["stock"],
        "held": row["held"],
        "available": max(row["stock"] - row["held"], 0),
        "sold_total": row["sold_total"],
        "recent_adjustments": [adjustment_view(a) for a in recent],
    }


def cart_view(rows: list[asyncpg.Record]) -> dict[str, Any]:
    lines, vendors, totals = [], {}, {}
    for r in rows:
        line_total = r["price_minor"] * r["quantity"]
        purchasable = r["listed"] and r["available"] >= r["quantity"]
        if purchasable:
            totals[r["currency"]] = totals.get(r["currency"], 0) + line_total
            v = vendors.setdefault((r["vendor_id"], r["currency"]), {
                "vendor_id": str(r["vendor_id"]), "vendor_name": r["vendor_name"],
                "subtotal": money(0, r["currency"]), "item_count": 0,
            })
            v["subtotal"]["amount_minor"] += line_total
            v["item_count"] += r["quantity"]
        lines.append({
            "product_id": str(r["product_id"]),
            "quantity": r["quantity"],
            "title": r["title"] if r["listed"] else None,
            "vendor_id": str(r["vendor_id"]) if r["listed"] else None,
            "unit_price": money(r["price_minor"], r["currency"]) if r["listed"] else None,
            "line_total": money(line_total, r["currency"]) if r["listed"] else None,
            "available": r["available"] if r["listed"] else 0,
            "purchasable": purchasable,
        })
    return {
        "cart_token": None,
        "lines": lines,
        "vendors": list(vendors.values()),
        "totals": [money(amount, currency) for currency, amount in sorted(totals.items())],
        "item_count": sum(r["quantity"] for r in rows),
    }


# --- the checkout -------------------------------------------------------------------------


def check_key(key: str | None) -> str:
    if key is None:
        raise Problem(400, "idempotency_key_required",
                      "send an Idempotency-Key header (one per purchase)")
    if not (1 <= len(key) <= MAX_KEY) or not all(0x21 <= ord(c) <= 0x7E for c in key):
        raise Problem(400, "invalid_idempotency_key",
                      f"Idempotency-Key must be 1–{MAX_KEY} printable ASCII characters")
    return key


async def place(conn: asyncpg.Connection, customer: uuid.UUID, request: CheckoutRequest
                ) -> tuple[int, str]:
    """Places the checkout inside the caller's transaction: (status, JSON body). A refusal
    returns before anything but the idempotency row is written."""
    cart = await conn.fetch(CART_FOR_CHECKOUT, customer)
    if not cart:
        return 422, Problem(422, "cart_empty", "the cart is empty",
                            [{"field": "cart", "message": "the cart is empty"}]).json()
    unlisted = [r for r in cart if not r["listed"]]
    if unlisted:
        return 422, Problem(422, "product_unavailable",
                            "some products in the cart are no longer listed",
                            [{"field": f"items.{r['product_id']}", "message": "no longer listed"}
                             for r in unlisted]).json()
    address = request.delivery_address
    stores: dict[uuid.UUID, list[asyncpg.Record]] = {}
    for r in cart:
        stores.setdefault(r["vendor_id"], []).append(r)
    orders = []
    for vendor_id, lines in sorted(stores.items()):
        first = lines[0]
        distance = distance_m(first["lat"], first["lng"], address.lat, address.lng)
        if distance > first["delivery_radius_km"] * 1000:
            return 422, Problem(
                422, "outside_delivery_area",
                f"{first['vendor_name']} delivers within {first['delivery_radius_km']} km; "
                f"the address is {distance / 1000:.1f} km away").json()
        currency = first["currency"]
        if any(r["currency"] != currency for r in lines):
            return 422, Problem(422, "mixed_currencies",
                                "one store's products must share a currency").json()
        subtotal = sum(r["price_minor"] * r["quantity"] for r in lines)
        fee = delivery_fee(distance, currency)
        orders.append((uuid.uuid4(), vendor_id, lines, subtotal, fee, currency))
    currency = orders[0][5]
    if any(o[5] != currency for o in orders):
        return 422, Problem(422, "mixed_currencies", "a checkout is paid in one currency").json()
    short = [r for r in cart if r["quantity"] > r["stock"] - r["held"]]
    if short:
        listed = "; ".join(f"{r['product_id']} (requested {r['quantity']}, available "
                           f"{max(r['stock'] - r['held'], 0)})" for r in short)
        return 409, Problem(409, "insufficient_stock", f"not enough stock: {listed}", [
            {"field": f"items.{r['product_id']}",
             "message": f"requested {r['quantity']}, available {max(r['stock'] - r['held'], 0)}"}
            for r in short]).json()

    now = utc_now()
    expires_at = now + PAYMENT_TIMEOUT
    checkout_id, payment_id = uuid.uuid4(), uuid.uuid4()
    total = sum(o[3] + o[4] for o in orders)
    provider_ref = "sim_pi_" + hashlib.sha256(checkout_id.bytes).hexdigest()[:24]
    products = [r["product_id"] for r in cart]
    await conn.execute(HOLD_STOCK, products, [r["quantity"] for r in cart])
    await conn.execute(INSERT_PAYMENT, payment_id, checkout_id, customer, total, currency,
                       provider_ref, now)
    await conn.execute(
        INSERT_ORDERS, [o[0] for o in orders], checkout_id, customer, payment_id, currency,
        address.text, address.lat, address.lng, RATES["commission_bps"],
        RATES["courier_fee_bps"], expires_at, now, [o[1] for o in orders],
        [o[3] for o in orders], [o[4] for o in orders], [o[3] + o[4] for o in orders])
    line_rows = [(o[0], r) for o in orders for r in o[2]]
    await conn.execute(
        INSERT_LINES, [oid for oid, _ in line_rows], [r["product_id"] for _, r in line_rows],
        [r["title"] for _, r in line_rows], [r["quantity"] for _, r in line_rows],
        [r["price_minor"] for _, r in line_rows], [r["currency"] for _, r in line_rows])
    await conn.execute(EMPTY_CART_LINES, customer, products)

    created, until = rfc3339(now), rfc3339(expires_at)
    body = {
        "checkout_id": str(checkout_id),
        "orders": [{
            "id": str(order_id),
            "checkout_id": str(checkout_id),
            "customer_id": str(customer),
            "vendor_id": str(vendor_id),
            "status": "pending_payment",
            "lines": [{
                "product_id": str(r["product_id"]),
                "title": r["title"],
                "quantity": r["quantity"],
                "unit_price": money(r["price_minor"], r["currency"]),
            } for r in lines],
            "created_at": created,
            "updated_at": created,
            "seq": 0,
            "expires_at": until,
            "courier_id": None,
            "delivery_address": {
                "address": address.text,
                "location": {"lat": address.lat, "lng": address.lng},
            },
            "totals": {
                "subtotal": money(subtotal, cur),
                "delivery_fee": money(fee, cur),
                "total": money(subtotal + fee, cur),
            },
            "payment_id": str(payment_id),
            "paid_at": None,
            "rejection_reason": None,
            "cancelled_by": None,
            "refunded": None,
            "refunds": [],
            "rates": RATES,
        } for order_id, vendor_id, lines, subtotal, fee, cur in orders],
        "payment": {
            "id": str(payment_id),
            "checkout_id": str(checkout_id),
            "payer": str(customer),
            "amount": money(total, currency),
            "provider": "simulated",
            "status": "pending",
            "provider_ref": provider_ref,
            "refunded_minor": 0,
            "created_at": created,
            "updated_at": created,
        },
    }
    return 201, json.dumps(body, separators=(",", ":"))


async def sweep(pool: asyncpg.Pool) -> None:
    """Gives back the holds of orders unpaid by their deadline; forgets old idempotency keys."""
    while True:
        await asyncio.sleep(SWEEP_EVERY_S)
        try:
            now = utc_now()
            async with pool.acquire() as conn, conn.transaction():
                released = await conn.fetch(EXPIRE_ORDERS, now)
                if released:
                    products = [r["product_id"] for r in released]
                    await conn.execute(LOCK_PRODUCTS, products)
                    await conn.execute(RELEASE_STOCK, products, [r["quantity"] for r in released])
            async with pool.acquire() as conn:
                await conn.execute("DELETE FROM idempotency WHERE created_at < $1",
                                   now - IDEMPOTENCY_TTL)
        except (asyncpg.PostgresError, OSError) as e:
            print(f"checkout peer: sweep failed: {e}", file=sys.stderr)


# --- start-up -----------------------------------------------------------------------------


async def require_durable_commits(conn: asyncpg.Connection) -> None:
    for setting in ("synchronous_commit", "fsync"):
        value = await conn.fetchval(f"SHOW {setting}")
        if value != "on":
            raise SystemExit(f"checkout peer: PostgreSQL runs with {setting}={value}; "
                             "the comparison needs it on")


async def load_export(conn: asyncpg.Connection, export: dict[str, Any]) -> None:
    """Creates the tables afresh and loads the exported vendors, products and customers."""
    await conn.execute(SCHEMA)
    vendors = [(
        uuid.UUID(v["id"]), uuid.UUID(v["owner"]), v["name"], float(v["location"]["lat"]),
        float(v["location"]["lng"]), float(v["delivery_radius_km"]), v.get("status", "active"),
        json.dumps(v),
    ) for v in export["vendors"]]
    known = {v[0] for v in vendors}
    products = [(
        uuid.UUID(p["id"]), uuid.UUID(p["vendor_id"]), p["title"],
        uuid.UUID(p["category_id"]) if p.get("category_id") else None,
        int(p["price"]["amount_minor"]), p["price"]["currency"],
        p.get("visibility", "published"),
        datetime.datetime.fromisoformat(p["created_at"].replace("Z", "+00:00")),
        min(int(p.get("available", 0)), MAX_STOCK),
    ) for p in export["products"] if uuid.UUID(p["vendor_id"]) in known]
    users = [(uuid.UUID(c["id"]), c["email"], c.get("role", "customer"))
             for c in export["customers"]]
    async with conn.transaction():
        await conn.copy_records_to_table(
            "users", records=users, columns=["id", "email", "role"])
        await conn.copy_records_to_table(
            "vendors", records=vendors,
            columns=["id", "owner", "name", "lat", "lng", "delivery_radius_km", "status", "body"])
        await conn.copy_records_to_table(
            "products", records=products,
            columns=["id", "vendor_id", "title", "category_id", "price_minor", "currency",
                     "visibility", "created_at", "stock"])
    await conn.execute("ANALYZE")
    print(f"checkout peer: {len(vendors)} vendors, {len(products)} products, "
          f"{len(users)} customers", file=sys.stderr)


def create_app(export: dict[str, Any], dsn: str, pool_size: int, secret: str) -> FastAPI:
    tokens = Tokens(secret)
    db: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        conn = await asyncpg.connect(dsn)
        try:
            await require_durable_commits(conn)
            await load_export(conn, export)
        finally:
            await conn.close()
        db["pool"] = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        sweeper = asyncio.create_task(sweep(db["pool"]))
        yield
        sweeper.cancel()
        await db["pool"].close()

    app = FastAPI(title="checkout peer", openapi_url=None, docs_url=None, redoc_url=None,
                  lifespan=lifespan)

    @app.exception_handler(Problem)
    async def problem(_: Request, e: Problem) -> Response:
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in err["loc"][1:]), "message": err["msg"]}
                  for err in e.errors()]
        return Problem(422, "validation_failed", "the request is not valid", errors).response()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/v1/admin/users")
    async def list_users(role: str | None = None, email: str | None = None, limit: int = 50,
                         cursor: str | None = None,
                         authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        caller.require_role("admin")
        if not caller.is_admin():
            raise Problem(403, "second_factor_required",
                          "administrators act only with a second factor")
        if not 1 <= limit <= 100:
            raise Problem(422, "validation_failed", "limit must be between 1 and 100")
        after = parse_uuid(cursor, "cursor") if cursor else None
        rows = await db["pool"].fetch(LIST_USERS, role, email, after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "users": [{"id": str(r["id"]), "email": r["email"], "role": r["role"],
                       "created_at": rfc3339(r["created_at"])} for r in rows],
            "next_cursor": str(rows[-1]["id"]) if more and rows else None,
        }

    @app.get("/api/v1/products")
    async def search(near: str | None = None, radius_km: float | None = None,
                     q: str | None = None, limit: int = SEARCH_LIMIT_DEFAULT,
                     cursor: str | None = None) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise Problem(422, "validation_failed", "limit must be between 1 and 100")
        lat = lng = None
        if near is not None:
            try:
                lat, lng = (float(x) for x in near.split(","))
            except ValueError:
                raise Problem(422, "validation_failed", "near must be lat,lng") from None
        elif radius_km is not None:
            raise Problem(422, "validation_failed", "radius_km needs `near`")
        radius_m = (radius_km if radius_km is not None else DEFAULT_RADIUS_KM) * 1000
        offset = int(cursor) if cursor and cursor.isdigit() else 0
        rows = await db["pool"].fetch(SEARCH_NEAR, lat, lng, radius_m,
                                      q.strip() if q and q.strip() else None, limit, offset)
        total = rows[0]["total"] if rows else 0
        return {
            "items": [{
                "id": str(r["id"]), "title": r["title"], "vendor_id": str(r["vendor_id"]),
                "vendor_name": r["vendor_name"],
                "category_id": str(r["category_id"]) if r["category_id"] else None,
                "price": money(r["price_minor"], r["currency"]), "available": r["available"],
                "visibility": r["visibility"], "created_at": rfc3339(r["created_at"]),
            } for r in rows],
            "total": total,
            "facets": [],
            "next_cursor": str(offset + limit) if offset + limit < total else None,
        }

    @app.get("/api/v1/vendors/{vendor_id}")
    async def vendor(vendor_id: str) -> Response:
        body = await db["pool"].fetchval("SELECT body FROM vendors WHERE id = $1",
                                         parse_uuid(vendor_id, "vendor id"))
        if body is None:
            raise not_found("no such store")
        return Response(body, media_type="application/json")

    async def owned(conn: asyncpg.Connection, caller: Caller, product: uuid.UUID,
                    lock: bool) -> asyncpg.Record:
        """The product's stock row, for its vendor or an admin; 404 to anyone else."""
        row = await conn.fetchrow(INVENTORY_ROW_LOCKED if lock else INVENTORY_ROW, product)
        if row is None or (row["owner"] != caller.id and not caller.is_admin()):
            raise not_found("no such product")
        return row

    @app.get("/api/v1/products/{product_id}/inventory")
    async def get_inventory(product_id: str,
                            authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        product = parse_uuid(product_id, "product id")
        async with db["pool"].acquire() as conn:
            row = await owned(conn, caller, product, lock=False)
            recent = await conn.fetch(RECENT, product, RECENT_ADJUSTMENTS)
        return inventory_view(row, recent)

    @app.put("/api/v1/products/{product_id}/inventory")
    async def put_inventory(product_id: str, update: StockUpdate,
                            authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        product = parse_uuid(product_id, "product id")
        if (update.stock is None) == (update.delta is None):
            raise Problem(422, "validation_failed", "give either stock or delta",
                          [{"field": "stock", "message": "give either stock or delta"}])
        if not update.reason.strip():
            raise Problem(422, "validation_failed", "a reason is needed",
                          [{"field": "reason", "message": "must not be blank"}])
        async with db["pool"].acquire() as conn, conn.transaction():
            row = await owned(conn, caller, product, lock=True)
            new = update.stock if update.stock is not None else row["stock"] + update.delta
            if not 0 <= new <= MAX_STOCK:
                raise Problem(422, "stock_out_of_range", "stock must stay within 0 … 1,000,000")
            if new < row["held"]:
                raise Problem(409, "stock_below_reserved",
                              f"{row['held']} units are held by checkouts; stock cannot go "
                              f"below that")
            await conn.execute("UPDATE products SET stock = $2 WHERE id = $1", product, new)
            kind, amount = ("set", new) if update.stock is not None else ("delta", update.delta)
            adjustment = await conn.fetchrow(
                "INSERT INTO stock_adjustments (id, product_id, at, kind, amount, stock_before, "
                "stock_after, reason, by_user) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                "RETURNING *", uuid.uuid4(), product, utc_now(), kind, amount, row["stock"], new,
                update.reason.strip(), caller.id)
            after = await conn.fetchrow(INVENTORY_ROW, product)
            recent = await conn.fetch(RECENT, product, RECENT_ADJUSTMENTS)
        return {"inventory": inventory_view(after, recent),
                "adjustment": adjustment_view(adjustment)}

    @app.get("/api/v1/cart")
    async def get_cart(authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        caller.require_role("customer")
        return cart_view(await db["pool"].fetch(CART_VIEW, caller.id))

    @app.delete("/api/v1/cart")
    async def clear_cart(authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        caller.require_role("customer")
        await db["pool"].execute("DELETE FROM cart_lines WHERE user_id = $1", caller.id)
        return cart_view([])

    @app.post("/api/v1/cart/items")
    async def add_item(item: AddItem,
                       authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        caller.require_role("customer")
        async with db["pool"].acquire() as conn:
            try:
                added = await conn.fetchval(ADD_TO_CART, caller.id, item.product_id,
                                            item.quantity, MAX_CART_LINES)
            except asyncpg.CheckViolationError:
                raise Problem(422, "validation_failed",
                              f"quantity must be between 1 and {MAX_QUANTITY}",
                              [{"field": "quantity", "message": "at most 99 units"}]) from None
            if added is None:
                if await conn.fetchval(PRODUCT_LISTED, item.product_id) is None:
                    raise Problem(422, "product_unavailable", "no such product is listed",
                                  [{"field": "product_id", "message": "no such product is listed"}])
                raise Problem(409, "cart_full",
                              f"a cart holds at most {MAX_CART_LINES} different products")
            return cart_view(await conn.fetch(CART_VIEW, caller.id))

    @app.post("/api/v1/checkout", status_code=201)
    async def checkout(request: Request, order: CheckoutRequest,
                       authorization: str | None = Header(None),
                       idempotency_key: str | None = Header(None)) -> Response:
        caller = tokens.caller(authorization)
        caller.require_role("customer")
        key = check_key(idempotency_key)
        if not order.delivery_address.text.strip():
            raise Problem(422, "validation_failed", "the address is blank",
                          [{"field": "delivery_address.text", "message": "must not be blank"}])
        if order.payment_method != "simulated":
            raise Problem(422, "payment_method_unavailable", "this platform takes `simulated` "
                          "payments", [{"field": "payment_method", "message": "simulated"}])
        if order.coupon_code is not None:
            raise Problem(422, "coupon_unknown", "no coupon has this code")
        fingerprint = hashlib.sha256(b"POST\0/api/v1/checkout\0" + await request.body()).hexdigest()
        async with db["pool"].acquire() as conn, conn.transaction():
            if await conn.fetchval(CLAIM_KEY, caller.id, key, fingerprint) is None:
                # Committed by the request that claimed it (the insert waited for it).
                first = await conn.fetchrow(READ_KEY, caller.id, key)
                if first is None or first["status"] is None:
                    raise Problem(409, "request_in_progress", "a request with this "
                                  "Idempotency-Key is still being processed; retry shortly")
                if first["request"] != fingerprint:
                    raise Problem(422, "idempotency_key_reused",
                                  "this Idempotency-Key was used for a different request")
                return Response(first["body"], status_code=first["status"],
                                media_type="application/json" if first["status"] < 300
                                else PROBLEM_JSON, headers={"Idempotent-Replayed": "true"})
            status, body = await place(conn, caller.id, order)
            await conn.execute(RECORD_ANSWER, caller.id, key, status, body)
        return Response(body, status_code=status,
                        media_type="application/json" if status < 300 else PROBLEM_JSON)

    @app.post("/api/v1/payments/{payment_id}/simulate")
    async def simulate(payment_id: str, outcome: Simulate,
                       authorization: str | None = Header(None)) -> dict[str, Any]:
        caller = tokens.caller(authorization)
        if outcome.outcome not in ("succeed", "fail"):
            raise Problem(422, "validation_failed", "outcome is succeed or fail")
        payment = parse_uuid(payment_id, "payment id")
        async with db["pool"].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(PAYMENT_LOCKED, payment)
            if row is None or row["payer"] != caller.id:
                raise not_found("no such payment")
            changed = False
            now = utc_now()
            if outcome.outcome == "succeed" and row["status"] in ("pending", "failed"):
                sold = await conn.fetch(PAY_ORDERS, row["checkout_id"], now)
                if sold:
                    products = [r["product_id"] for r in sold]
                    await conn.execute(LOCK_PRODUCTS, products)
                    await conn.execute(SELL_STOCK, products, [r["quantity"] for r in sold])
                changed = True
            elif outcome.outcome == "fail" and row["status"] == "pending":
                changed = True
            if changed:
                status = "succeeded" if outcome.outcome == "succeed" else "failed"
                row = await conn.fetchrow(
                    "UPDATE payments SET status = $2, updated_at = $3 WHERE id = $1 RETURNING *",
                    payment, status, now)
        return {"changed": changed, "payment": payment_view(row)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="JSON export of a seeded node (checkout_export.py)")
    parser.add_argument("--dsn", required=True, help="postgresql://user@host:port/database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18486)
    parser.add_argument("--pool-size", type=int, default=16,
                        help="PostgreSQL connections of the worker")
    args = parser.parse_args()
    secret = os.environ.get("HEXMARKET_JWT_SECRET")
    if not secret:
        raise SystemExit("checkout peer: set HEXMARKET_JWT_SECRET, the node's token key")
    with open(args.export, encoding="utf-8") as f:
        export = json.load(f)
    uvicorn.run(
        create_app(export, args.dsn, args.pool_size, secret),
        host=args.host,
        port=args.port,
        workers=1,
        access_log=False,
        log_level="warning",
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
    )


if __name__ == "__main__":
    main()
