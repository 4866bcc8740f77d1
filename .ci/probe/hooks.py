"""schemathesis hooks for hexmarket's probe (loaded through SCHEMATHESIS_HOOKS).

`documented_requests_are_accepted` takes the place of schemathesis's positive_data_acceptance:
a request generated from the document (positive mode) must not be refused as malformed.
hexmarket's problems say why a request was refused in a stable `code`, so the check can tell a
document that lies (`unknown_field`, `validation_failed`, `invalid_query`, ...: the document let
through a value the server does not take) from a request that is well formed but names
something that does not exist or no longer holds: a cursor or token this server never issued,
a cart that is empty, a password on the common list. The schema cannot know those; the
server's state decides them."""

import re

import schemathesis
from schemathesis.specs.openapi.checks import skips_on_unexpected_http_status

# Refusals that depend on the server's state or on secrets, not on the request's shape.
STATE_CODES = {
    "invalid_cursor",  # a cursor only means something when this server issued it
    "invalid_token",  # email verification and password reset tokens
    "invalid_code",  # SMS codes
    "invalid_refresh_token",
    "invalid_signature",  # a Stripe webhook signature
    "invalid_cart_token",
    "password_too_common",
    "password_contains_email",
    "cart_empty",
    "product_unavailable",
    "outside_delivery_area",
    "payment_method_unavailable",
    "mixed_currencies",
    "idempotency_key_reused",
    "refund_exceeds_total",
    "stock_out_of_range",
    "invalid_image",
    "too_many_images",
    # a webhook URL or push endpoint whose host does not resolve from here, or resolves to a
    # private address: the network decides, not the request's shape
    "webhook_target_refused",
    # push subscription keys that match their pattern but are no P-256 point / no 16 bytes
    "invalid_push_keys",
    # a coupon code nobody issued, one out of its window, goods below its minimum, or nothing
    # in the cart it applies to
    "coupon_unknown",
    "coupon_expired",
    "coupon_min_spend",
    "coupon_not_applicable",
    # sign-in ceremonies: a passkey challenge or link token, and a provider flow's state, mean
    # something only when this server issued them (and only once); what the provider answers
    "ceremony_unknown",
    "oidc_state_mismatch",
    "oidc_code_rejected",
    "oidc_provider_error",
    "oidc_email_missing",
}

# Rules between two parameters, which the document states in words but JSON Schema (for query
# parameters) cannot: (method, path, field named in the problem, up to its first dot).
CROSS_FIELD_RULES = {
    ("GET", "/api/v1/products", "max_price"),  # not below min_price
    ("GET", "/api/v1/vendor/products", "max_price"),
    ("GET", "/api/v1/products", "radius_km"),  # only with near
    ("GET", "/api/v1/vendor/products", "radius_km"),
    ("GET", "/api/v1/vendors", "radius_km"),
    # a price's upper bound is a million major units: its minor units depend on the currency
    ("POST", "/api/v1/products", "price"),
    ("PATCH", "/api/v1/products/{id}", "price"),
    # a coupon takes exactly one of percent_bps and amount; amounts are positive and bounded in
    # major units (their minor units depend on the currency); its window ends after it starts
    ("POST", "/api/v1/coupons", "percent_bps"),
    ("POST", "/api/v1/coupons", "amount"),
    ("POST", "/api/v1/coupons", "min_spend"),
    ("POST", "/api/v1/coupons", "ends_at"),
    ("POST", "/api/v1/coupons", "funded_by"),  # a platform-wide coupon is the platform's
    # a reconciliation period ends after it starts, at most 366 days later
    ("GET", "/api/v1/admin/ledger/reconciliation", "to"),
    # a delivery fee table's cap is at least its base fee
    ("PATCH", "/api/v1/admin/settings", "delivery_fees"),
    # an audit range ends after it starts, at most five years later
    ("GET", "/api/v1/admin/audit", "from"),
    # a WebAuthn credential's fields are an authenticator's bytes (base64url CBOR and
    # signatures): the document gives their shape, the server's decoding decides
    ("POST", "/api/v1/auth/passkeys/register", "credential"),
    ("POST", "/api/v1/auth/passkeys/sign-in", "credential"),
    ("POST", "/api/v1/auth/step-up/passkey", "credential"),
    ("POST", "/api/v1/auth/oidc/link", "credential"),
    # a link is proven by the password or a passkey (one of the two), with otp or
    # recovery_code (at most one)
    ("POST", "/api/v1/auth/oidc/link", "password"),
    ("POST", "/api/v1/auth/oidc/link", "recovery_code"),
    # a provider's way back carries a code, or an error instead
    ("GET", "/api/v1/auth/oidc/{provider}/callback", "code"),
    ("POST", "/api/v1/auth/oidc/{provider}/callback", "code"),
}
# Analytics ranges end after they start, at most 366 days later (supply and demand: 7 days).
CROSS_FIELD_RULES |= {
    ("GET", f"/api/v1/analytics{path}", field)
    for path in (
        "/sales",
        "/revenue",
        "/products/top-selling",
        "/stores/{store}/sales",
        "/stores/{store}/products/top-selling",
        "/platform/sales",
        "/platform/stores/top-selling",
        "/platform/products/top-selling",
        "/couriers",
        "/couriers/{courier}",
        "/supply-demand",
    )
    for field in ("from", "to")
}


@schemathesis.check
@skips_on_unexpected_http_status
def documented_requests_are_accepted(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 413, 415, 422):
        return None
    try:
        problem = response.json()
    except ValueError:
        raise AssertionError(f"{response.status_code} without a problem body") from None
    code = problem.get("code")
    if code in STATE_CODES:
        return None
    detail = problem.get("detail") or ""
    # JSON Schema counts 2.0 as an integer; serde reads integers only from integer literals,
    # as every client sends them.
    if code == "validation_failed" and re.search(r"invalid type: floating point `-?\d+(\.0)?`", detail):
        return None
    errors = problem.get("errors") or []
    # A reference to something that does not exist (`category_id: no such category`).
    if errors and all((e.get("message") or "").startswith("no such") for e in errors):
        return None
    fields = {e.get("field") for e in errors}
    operation = (case.method.upper(), case.operation.path)
    if fields and all((*operation, (f or "").split(".")[0]) in CROSS_FIELD_RULES for f in fields):
        return None
    raise AssertionError(
        f"a request the document describes was refused: {response.status_code} {code}: "
        f"{problem.get('detail')}"
    )
