#!/usr/bin/env python3
"""A customer's purchase through the client generated from the served document, and nothing
else: register, log in, add the seeded product to the cart, check out with an
Idempotency-Key, pay (simulated), read the order. Every answer must be the documented success
type; a problem, an undocumented status or a body the generated models cannot read fails.

    client_flow.py BASE_URL SEED.json      (the generated package `hexmarket_client` importable)
"""

import json
import sys
import uuid

from hexmarket_client import AuthenticatedClient, Client
from hexmarket_client.api.auth import login, register
from hexmarket_client.api.cart import add_item, get_cart
from hexmarket_client.api.orders import checkout, get_order
from hexmarket_client.api.payments import get_payment, simulate
from hexmarket_client.models import (
    AccountView,
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


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
