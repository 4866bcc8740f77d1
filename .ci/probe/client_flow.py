#!/usr/bin/env python3
"""A customer's purchase through the client generated from the served document, and nothing
else: register, log in, add the seeded product to the cart, check out with an
Idempotency-Key, pay (simulated), read the order. Then money: the admin (signing in with an
authenticator code) creates a coupon, the customer prices the cart with it and checks out with
it; the store's owner reads its ledger accounts until the payments are booked; the admin reads
the ledger's summary and transactions, runs payouts and reconciles. Every answer must be the
documented success type; a problem, an undocumented status or a body the generated models
cannot read fails.

    client_flow.py BASE_URL SEED.json      (the generated package `hexmarket_client` importable)
"""

import datetime
import json
import os
import sys
import time
import uuid

from hexmarket_client import AuthenticatedClient, Client
from hexmarket_client.api.auth import login, register
from hexmarket_client.api.cart import add_item, get_cart
from hexmarket_client.api.admin import get_run, reconciliation, request_run, summary
from hexmarket_client.api.admin import list_transactions
from hexmarket_client.api.coupons import create_coupon
from hexmarket_client.api.ledger import list_accounts
from hexmarket_client.api.orders import checkout, get_order
from hexmarket_client.api.payments import get_payment, simulate
from hexmarket_client.models import (
    AccountsPage,
    AccountView,
    CouponView,
    LedgerSummary,
    NewCoupon,
    PayoutRun,
    Reconciliation,
    TransactionsPage,
    AddItem,
    CartView,
    CheckoutRequest,
    CheckoutView,
    DeliveryAddress,
    LoginRequest,
    OrderRecord,
    OrderStatus,
    PaymentView,
    Problem,
    ProviderName,
    RegisterRequest,
    SelfServiceRole,
    SimulateAnswer,
    SimulatedOutcome,
    SimulateRequest,
    TokenResponse,
)


def expect(step, response, kind, status):
    """The parsed body of a response that must be `status` with a `kind` body."""
    parsed = response.parsed
    if isinstance(parsed, Problem):
        sys.exit(f"{step}: {response.status_code} problem {parsed.code}: {parsed.detail}")
    if response.status_code != status or not isinstance(parsed, kind):
        body = response.content.decode(errors="replace")[:500]
        sys.exit(f"{step}: expected {status} {kind.__name__}, got {response.status_code}: {body}")
    print(f"client: {step}: {response.status_code} {kind.__name__}")
    return parsed


def main(base, seed_file):
    with open(seed_file) as f:
        seed = json.load(f)
    guest = Client(base_url=base, raise_on_unexpected_status=True, timeout=30)

    email = f"client-{uuid.uuid4().hex[:10]}@example.com"
    password = "generated-client-2026"
    account = expect(
        "register",
        register.sync_detailed(
            client=guest,
            body=RegisterRequest(
                email=email, password=password, name="Generated Client", role=SelfServiceRole.CUSTOMER
            ),
        ),
        AccountView,
        201,
    )
    tokens = expect(
        "login",
        login.sync_detailed(client=guest, body=LoginRequest(email=email, password=password)),
        TokenResponse,
        200,
    )
    customer = AuthenticatedClient(
        base_url=base, token=tokens.access_token, raise_on_unexpected_status=True, timeout=30
    )

    product = uuid.UUID(seed["product_id"])
    expect(
        "cart add",
        add_item.sync_detailed(client=customer, body=AddItem(product_id=product, quantity=2)),
        CartView,
        200,
    )
    cart = expect("cart", get_cart.sync_detailed(client=customer), CartView, 200)
    if len(cart.lines) != 1 or cart.lines[0].quantity != 2:
        sys.exit(f"cart: expected 2 × the seeded product, got {cart.to_dict()}")

    home = seed["home"]
    request = CheckoutRequest(
        delivery_address=DeliveryAddress(text=home["text"], lat=home["lat"], lng=home["lng"]),
        payment_method=ProviderName.SIMULATED,
    )
    key = str(uuid.uuid4())
    placed = expect(
        "checkout",
        checkout.sync_detailed(client=customer, body=request, idempotency_key=key),
        CheckoutView,
        201,
    )
    replayed = expect(
        "checkout retried with the same key",
        checkout.sync_detailed(client=customer, body=request, idempotency_key=key),
        CheckoutView,
        201,
    )
    if replayed.checkout_id != placed.checkout_id:
        sys.exit("checkout: a retry with the same Idempotency-Key made another checkout")

    payment = placed.payment
    expect(
        "pay (simulated)",
        simulate.sync_detailed(
            payment.id, client=customer, body=SimulateRequest(outcome=SimulatedOutcome.SUCCEED)
        ),
        SimulateAnswer,
        200,
    )
    paid = expect("payment", get_payment.sync_detailed(payment.id, client=customer), PaymentView, 200)
    if paid.status.value != "succeeded":
        sys.exit(f"payment: status {paid.status.value}")

    for order in placed.orders:
        record = expect("order status", get_order.sync_detailed(order.id, client=customer), OrderRecord, 200)
        if record.status != OrderStatus.PAID:
            sys.exit(f"order {order.id}: status {record.status.value}, expected paid")
        if record.customer_id != account.id:
            sys.exit(f"order {order.id}: customer {record.customer_id}, expected {account.id}")
    print(f"client: {len(placed.orders)} order(s) paid through the generated client")
    money(base, seed, customer, request, product)


def sign_in(base, email, password, code=None):
    """Logs in; `code` gives the authenticator's current code. A code is taken once per account,
    so one already used (by the seeding, moments ago) means waiting for the next one."""
    guest = Client(base_url=base, raise_on_unexpected_status=True, timeout=30)
    if code is None:
        answer = login.sync_detailed(client=guest, body=LoginRequest(email=email, password=password))
    else:
        answer = login.sync_detailed(client=guest, body=LoginRequest(email=email, password=password, otp=code()))
        if isinstance(answer.parsed, Problem) and answer.parsed.code == "invalid_code":
            time.sleep(31 - time.time() % 30)
            answer = login.sync_detailed(client=guest, body=LoginRequest(email=email, password=password, otp=code()))
    tokens = expect(f"login of {email}", answer, TokenResponse, 200)
    return AuthenticatedClient(base_url=base, token=tokens.access_token, raise_on_unexpected_status=True, timeout=30)


def money(base, seed, customer, request, product):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from seed import totp  # noqa: E402 - the authenticator's code, computed as an app would

    users = seed["users"]
    admin_user = users["admin"]
    admin = sign_in(base, admin_user["email"], admin_user["password"], lambda: totp(admin_user["totp_secret"]))
    code = f"CLIENT{uuid.uuid4().hex[:8].upper()}"
    coupon = expect(
        "coupon",
        create_coupon.sync_detailed(client=admin, body=NewCoupon.from_dict(
            {"code": code, "percent_bps": 1000, "total_limit": 10})),
        CouponView,
        201,
    )
    expect(
        "cart add",
        add_item.sync_detailed(client=customer, body=AddItem(product_id=product, quantity=1)),
        CartView,
        200,
    )
    priced = expect("cart priced with the coupon", get_cart.sync_detailed(client=customer, coupon_code=code),
                    CartView, 200)
    if not priced.coupon or priced.coupon.discount.amount_minor <= 0:
        sys.exit(f"cart: the coupon took nothing off: {priced.to_dict()}")
    with_coupon = CheckoutRequest.from_dict({**request.to_dict(), "coupon_code": coupon.code})
    placed = expect(
        "checkout with the coupon",
        checkout.sync_detailed(client=customer, body=with_coupon, idempotency_key=str(uuid.uuid4())),
        CheckoutView,
        201,
    )
    order = placed.orders[0]
    if order.discount is None or order.discount.amount.amount_minor != priced.coupon.discount.amount_minor:
        sys.exit(f"checkout: the order's discount is not the cart's: {order.to_dict()}")
    expect(
        "pay (simulated)",
        simulate.sync_detailed(
            placed.payment.id, client=customer, body=SimulateRequest(outcome=SimulatedOutcome.SUCCEED)
        ),
        SimulateAnswer,
        200,
    )

    vendor_user = users["vendor"]
    vendor = sign_in(base, vendor_user["email"], vendor_user["password"])
    pending = f"store_pending:{seed['vendor_id']}"
    for _ in range(100):
        page = expect("store's accounts", list_accounts.sync_detailed(client=vendor), AccountsPage, 200)
        owed = {a.account: sum(m.amount_minor for m in a.owed or []) for a in page.items}
        if owed.get(pending, 0) > 0:
            break
        time.sleep(0.2)
    else:
        sys.exit(f"ledger: the store's pending balance never showed the payments: {page.to_dict()}")

    state = expect("ledger summary", summary.sync_detailed(client=admin), LedgerSummary, 200)
    if not state.balanced:
        sys.exit(f"ledger: does not balance: {state.to_dict()}")
    txs = expect("ledger transactions", list_transactions.sync_detailed(client=admin, limit=1000),
                 TransactionsPage, 200)
    if not any(t.kind.value == "payment" for t in txs.items):
        sys.exit("ledger: no payment booked")
    run = expect("payout run", request_run.sync_detailed(client=admin), PayoutRun, 202)
    for _ in range(100):
        run = expect("payout run status", get_run.sync_detailed(run.id, client=admin), PayoutRun, 200)
        if run.status.value == "done":
            break
        time.sleep(0.2)
    else:
        sys.exit(f"payouts: the run never finished: {run.to_dict()}")
    now = datetime.datetime.now(datetime.timezone.utc)
    # The ledger books within a couple of seconds: until then a payment shows as a difference.
    for _ in range(100):
        report = expect(
            "reconciliation",
            reconciliation.sync_detailed(client=admin, from_=now - datetime.timedelta(hours=1),
                                         to=now + datetime.timedelta(minutes=1)),
            Reconciliation,
            200,
        )
        if not report.differences:
            break
        time.sleep(0.2)
    else:
        sys.exit(f"reconciliation: {[d.to_dict() for d in report.differences]}")
    print(f"client: money through the generated client: coupon {code}, {len(txs.items)} transactions, "
          f"{report.payments} payments reconciled with {len(report.differences)} differences")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
