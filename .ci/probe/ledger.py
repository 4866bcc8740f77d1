#!/usr/bin/env python3
"""The money ledger from outside, end to end, across three crashes.

    ledger.py HEXMARKET_BIN WORK_DIR

Starts a hexmarket node of its own (a short payout hold, payouts only when an admin runs them,
unpaid orders expiring after a few seconds, default rates from the environment), creates an
admin with the CLI and seeds through the API (seed.py), then, through the public API and
WebSockets only:

  - three stores a few dozen metres apart, each with two published products in stock; one
    has rates of its own (PUT /admin/ledger/rates/stores/{id}); the first store's owner enrols
    an authenticator, steps up with a recovery code and sends the store's payouts to
    `sim_refuse`, a destination the simulated provider refuses;
  - LEDGER_ORDERS orders by LEDGER_CUSTOMERS customers, half of them of both products of a
    store: some payments fail, some arrive after the order expired (a late payment revives
    it), customers cancel some and stores reject some (refunded whole), an admin refunds one
    line of some before delivery; couriers on /ws/courier (notifications.py's) pick up the rest
    and hand them over at the drop-off, one of them far from it (held for review); an admin
    refunds a line of some as soon as they are handed over (during the hold, racing the
    release); a third of the way through, an admin sets new default rates (orders placed
    before keep the ones frozen on them);
  - payments that arrive for orders that cannot be served (cancelled before payment, or
    expired with their last unit sold meanwhile): given back;
  - payouts run mid-way (the refused store's payout fails and its money comes back; its owner
    then names a destination that works), again with a SIGKILL as soon as the run is being
    made, and at the end; the node is also SIGKILLed after a quarter and half of the
    handovers; every client rides the crashes out (`patient`);
  - after the handovers, an admin refunds a line of some delivered orders (after their
    release, some after their payout), the rest of a few, and releases the delivery held for
    review.

Afterwards, every transaction (GET /admin/ledger/transactions) is checked against the orders'
logs and the payouts: each balances; balances are what the transactions add up to; each paid
order's payment is shared by the rates frozen on it (its store's, or the default when it was
placed); refunds are shared in proportion to what is left and come out of pending or payable
money as the release stands; each verified delivery is released once, for what the refunds
before it left; nothing stays pending, held or in transit, and what every store and courier
was owed reached a payout; each payout is booked once and ended once as its status says,
listed once, and counted by its run; stores and couriers see their own accounts, statements
and payouts; the reconciliation with the provider finds no difference and sums what the
orders and payouts say; no 5xx or refused connection outside the crashes; no panic. Exits
non-zero naming every violation.

A coupon of 15 % off the second store's goods, funded by that store and limited to 50
redemptions (one per customer), is asked for by every order of that store that pays on time:
more than 50 ask, so some checkouts are refused `coupon_exhausted` (and go ahead without it),
and orders that fail or are cancelled unpaid give their redemption back to the next. At the
end the coupon was used exactly as often as paid orders carry it, never more than 50 times,
none is left held, and each discounted order's shares are of its discounted goods."""

import collections
import json
import os
import sys
import threading
import time
import urllib.error
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import notifications  # noqa: E402
import seed as seeding  # noqa: E402
from notifications import CARRY, HOME, Courier, Node, Person, patient  # noqa: E402
from seed import STORE, Refused, must, register, seed, totp  # noqa: E402

ORDERS = int(os.environ.get("LEDGER_ORDERS", "300"))
CUSTOMERS = max(int(os.environ.get("LEDGER_CUSTOMERS", str(ORDERS))), 1)
COURIERS = ORDERS // CARRY + 2
HOLD_SECS = 2
PAYMENT_TIMEOUT_SECS = 4
# Default rates from the environment (not the built-in ones, so that they are seen to count),
# and the third store's own.
DEFAULT_RATES = {"commission_bps": 1200, "courier_fee_bps": 7500}
OWN_RATES = {"commission_bps": 1000, "courier_fee_bps": 7000}
# Three stores next to seed.py's (the first is seed.py's own): prices with odd shares.
STORES = [
    {"offset": 0.0, "prices": (1250, 795)},
    {"offset": 0.0008, "prices": (1333, 499)},
    {"offset": -0.0008, "prices": (2150, 1075)},
]
# The default rates an admin sets a third of the way through: orders placed before keep theirs.
NEW_DEFAULT_RATES = {"commission_bps": 1300, "courier_fee_bps": 7600}
# A handover here, 300 m east of the drop-off, is outside its geofence (100 m): unverified.
AWAY = (HOME["lat"], HOME["lng"] + 0.0045)
# A trip moves a courier's GPS clock up to 37 s on (19 fixes, 18 more to ride away and back);
# the node drops fixes more than 30 s ahead of its own clock. A courier whose clock is less
# than this far behind real time takes no new orders.
REST_SECS = 10
REFUSED = "sim_refuse"
WORKING = "acct_probe_kitchen"
# The second store's coupon: 15 % off its goods, funded by the store, 50 redemptions in all.
COUPON = "LEDGER50"
COUPON_BPS = 1500
COUPON_LIMIT = 50


STARTED = time.time()


def say(text):
    print(f"ledger [{time.time() - STARTED:5.1f} s]: {text}", file=sys.stderr, flush=True)


# -- every answer watched ---------------------------------------------------------------------

# (time, method, path, status or error): every 5xx and every refused connection, whoever made
# the call. `patient` retries them silently; they are judged against the crash windows later.
TROUBLE = []


def watched(call):
    def watching(base, method, path, body=None, token=None, headers=None):
        try:
            status, answer = call(base, method, path, body, token, headers)
        except (OSError, urllib.error.URLError) as e:
            TROUBLE.append((time.time(), method, path, repr(e)[:120]))
            raise
        if status >= 500:
            TROUBLE.append((time.time(), method, path, f"{status} {str(answer)[:200]}"))
        return status, answer

    return watching


# seed.login and notifications.patient look `call` up in their own modules.
call = watched(seeding.call)
seeding.call = notifications.call = call


# -- the plan ---------------------------------------------------------------------------------


def plan(n):
    """What happens to order n: the same for every run, so a failure can be found again."""
    k = n % 20
    return {
        "n": n,
        "store": n % 3,
        # Odd orders have both products of their store (the second twice): their lines can be
        # refunded one at a time.
        "two_lines": n % 2 == 1,
        "payment": "fail" if k == 19 else "late" if k == 9 else "pay",
        # The customer cancels before paying and pays anyway: the payment goes back.
        "outcome": {3: "reject", 7: "cancel", 13: "cancel_unpaid", 19: "unpaid"}.get(k, "deliver"),
        # An admin refunds the second line before the handover, as soon as it is handed over
        # (during the hold, racing the release), or after the release.
        "line_refund": {1: "before", 11: "hold", 5: "after", 15: "after"}.get(k),
        # ...and then what is left of the order.
        "refund_rest": n % 40 == 15,
        # Handed over far from the drop-off: held for review.
        "away": n == 17,
        # Every order of the second store that pays on time asks for its coupon (a late
        # payment of an order whose redemption was given back may find none left, and would be
        # given back: not the story those orders tell).
        "coupon": n % 3 == 1 and k != 9,
    }


def expected_shares(subtotal, delivery_fee, rates):
    """The issue's formula: each share rounded half up; the store and the platform's delivery
    income take what rounding leaves. A store's own coupon makes the goods shared cheaper."""
    commission = (subtotal * rates["commission_bps"] + 5000) // 10000
    courier = (delivery_fee * rates["courier_fee_bps"] + 5000) // 10000
    return {"store": subtotal - commission, "commission": commission, "courier": courier,
            "delivery": delivery_fee - courier}


def amounts(tx):
    """A transaction's entries summed per account (minor units)."""
    out = collections.Counter()
    for entry in tx["entries"]:
        out[entry["account"]] += entry["amount"]["amount_minor"]
    return out


def kind_of(event):
    return event["kind"]["type"] if isinstance(event["kind"], dict) else event["kind"]


def rfc3339(at):
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(text):
    """Seconds since the epoch of an RFC 3339 UTC time (the node writes nanoseconds)."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    at = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return at + (float("0." + fraction[:6]) if fraction else 0.0)


def special(name, store, outcome):
    """The plan of an order outside the numbered ones."""
    return {"n": name, "store": store, "two_lines": False, "payment": "pay", "outcome": outcome,
            "line_refund": None, "refund_rest": False, "away": False, "coupon": False}


class LedgerCourier(Courier):
    """notifications.py's courier, with two differences. Its GPS clock runs a second per fix
    (from a minute in the past, faster than real time while it rides), so a courier who rode
    much would report fixes from the future, which the node drops, and hand over where its last
    kept fix was: it declines offers until real time has caught up with its clock (REST_SECS).
    And an order the probe marked `away` is handed over 300 m from its drop-off."""

    def handle(self, frame):
        if frame.get("type") == "offer" and self.clock > time.time() - REST_SECS:
            self.send({"type": "offer_response", "offer_id": frame["offer_id"], "accept": False})
            return
        if frame.get("type") == "ack" and frame.get("of") == "location" and frame.get("dropped"):
            with self.probe.lock:
                self.probe.dropped_fixes[self.person.id] += frame["dropped"]
        super().handle(frame)

    def act(self, frame_type, order, **extra):
        if frame_type != "delivered":
            return super().act(frame_type, order, **extra)
        if order not in self.probe.away:
            done = super().act(frame_type, order, **extra)
        else:
            back = self.at
            self.ride(AWAY)
            done = super().act(frame_type, order, **extra)
            self.ride(back)
        if done:
            self.probe.handed_over(order)
        return done


class Probe:
    def __init__(self, binary, work):
        self.work = work
        self.node = Node(binary, os.path.join(work, "data"), os.path.join(work, "node.log"), {
            "HEXMARKET_LOG": "warn,hexmarket::ledger=info",
            # notifications.py's node turns the ledger off; this one is about the ledger.
            "HEXMARKET_LEDGER": "true",
            "HEXMARKET_PAYOUT_HOLD_SECS": str(HOLD_SECS),
            "HEXMARKET_PAYOUT_EVERY_SECS": "0",
            "HEXMARKET_COMMISSION_BPS": str(DEFAULT_RATES["commission_bps"]),
            "HEXMARKET_COURIER_FEE_BPS": str(DEFAULT_RATES["courier_fee_bps"]),
            "HEXMARKET_ORDER_PAYMENT_TIMEOUT_SECS": str(PAYMENT_TIMEOUT_SECS),
        })
        self.base, self.ws = self.node.base, self.node.ws
        self.started = time.time()
        self.finished = threading.Event()
        self.lock = threading.Lock()
        self.codes = {}  # order -> handoff code (the couriers read it)
        self.delivered = set()  # orders handed over (the couriers fill it)
        self.away = set()  # orders to hand over far from the drop-off
        self.orders = {}  # order -> its plan, with "id", "customer", "products"
        self.offline = []  # (from, to): the first start, and each SIGKILL until the node is up again
        self.kills = 0
        self.crashing = threading.Lock()  # one SIGKILL and restart at a time
        self.dropped_fixes = collections.Counter()  # courier -> GPS fixes the node dropped
        self.lags = []  # (order event at, seconds until its transaction was listed)
        self.figures = collections.Counter()  # what the checks went through
        self.helpers = ThreadPoolExecutor(2)  # refunds during the hold
        self.hold_refunds = {}  # order -> its refund's future
        self.rates_changed = None  # (asked at, answered at) of the new default rates
        self.reviewed = set()  # unverified deliveries an admin released
        self.runs = []  # payout run ids, in order
        self.problems = []
        self.stepped_up_at = 0.0

    def stop(self):
        self.finished.set()
        self.helpers.shutdown(wait=False, cancel_futures=True)
        self.node.stop()

    def problem(self, text):
        with self.lock:
            self.problems.append(text)
        say(f"VIOLATION: {text}")

    # -- people and stores ----------------------------------------------------------------

    def setup(self):
        admin_password = "kestrel-" + uuid.uuid4().hex[:16]
        printed = self.node.create_admin("admin@ledger.example.com", admin_password)
        admin_file = os.path.join(self.work, "admin.txt")
        with open(admin_file, "w") as f:
            f.write(f"admin@ledger.example.com\n{admin_password}\n{printed}")
        starting = time.time()
        self.node.start()
        self.offline.append((starting, time.time()))
        seed_file = os.path.join(self.work, "seed.json")
        seed(self.base, admin_file, seed_file)
        with open(seed_file) as f:
            self.seeded = json.load(f)
        users = self.seeded["users"]
        self.admin = Person(self, users["admin"], users["admin"]["totp_secret"])
        with ThreadPoolExecutor(8) as pool:
            # seed.py used this 30 s window's code: the admin's own login may wait for the next.
            admin_login = pool.submit(self.step_up)
            self.stores = [self.store(i) for i in range(len(STORES))]
            self.customers = list(pool.map(self.customer, range(CUSTOMERS + 2)))
            self.couriers = list(pool.map(self.courier, range(COURIERS)))
            admin_login.result()
        # The last two customers are the payment-returned scenario's.
        self.latecomer, self.rival = self.customers[CUSTOMERS], self.customers[CUSTOMERS + 1]
        self.customers = self.customers[:CUSTOMERS]
        own = must([200], self.money("PUT", f"/api/v1/admin/ledger/rates/stores/{self.stores[2]['id']}", OWN_RATES),
                   "the third store's rates")
        if own != {"rates": OWN_RATES, "own": True}:
            self.problem(f"PUT store rates answered {own}")
        seen = must([200], self.admin.call("GET", "/api/v1/admin/ledger/rates"), "default rates")
        if seen != DEFAULT_RATES:
            self.problem(f"the default rates are {seen}, not HEXMARKET_COMMISSION_BPS/COURIER_FEE_BPS {DEFAULT_RATES}")
        self.refuse_payouts_of_first_store()
        made = must([201], self.admin.call("POST", "/api/v1/coupons", {
            "code": COUPON.lower(), "percent_bps": COUPON_BPS, "store_id": self.stores[1]["id"], "funded_by": "store",
            "total_limit": COUPON_LIMIT}), "the coupon")
        if (made["code"], made["funded_by"], made["held"], made["used"]) != (COUPON, "store", 0, 0):
            self.problem(f"the coupon was created as {made}")
        # Rates are read through a cache of two seconds: orders placed from now on get them.
        time.sleep(2.5)
        say(f"3 stores (one with its own rates), {len(self.customers) + 2} customers, {len(self.couriers)} couriers")

    def store(self, i):
        """Store i: seed.py's store (with a second product) or a new vendor's, next to it."""
        spec = STORES[i]
        if i == 0:
            owner = Person(self, self.seeded["users"]["vendor"])
            store_id = self.seeded["vendor_id"]
            products = [self.seeded["product_id"]]
        else:
            owner = Person(self, register(self.base, "vendor", f"v{i}"))
            location = {"lat": STORE["lat"], "lng": STORE["lng"] + spec["offset"]}
            store_id = must([201], owner.call("POST", "/api/v1/vendors", {
                "name": f"Ledger Kitchen {i}", "pickup_address": f"Friedrichstrasse {100 + i}, Berlin",
                "location": location, "delivery_radius_km": 8}), "store")["id"]
            products = []
        prices = list(spec["prices"])
        for price in prices[len(products):]:
            products.append(self.product(owner, f"Ledger dish {i}-{price}", price, 100000))
        store = {"id": store_id, "owner": owner, "products": products}
        if i == 1:
            # The last unit of something: sold to someone else while an unpaid order expired.
            store["last_one"] = self.product(owner, "Ledger last one", 2990, 1)
        return store

    def product(self, owner, title, price, stock):
        made = must([201], owner.call("POST", "/api/v1/products", {
            "title": title, "description": "Seeded for the ledger probe", "category_id": self.seeded["category_id"],
            "price": {"amount_minor": price, "currency": "EUR"}, "visibility": "published"}), "product")
        must([200], owner.call("PUT", f"/api/v1/products/{made['id']}/inventory",
                               {"stock": stock, "reason": "seeded for the ledger probe"}), "stock")
        return made["id"]

    def customer(self, i):
        person = Person(self, register(self.base, "customer", f"lc{i}"))
        person.cart = threading.Lock()  # one checkout at a time per customer: one cart
        return person

    def courier(self, i):
        person = Person(self, register(self.base, "courier", f"lr{i}"))
        must([200], person.call("PUT", "/api/v1/couriers/me/profile", {"vehicle": "scooter", "max_concurrent_orders": CARRY}),
             "courier profile")
        return person

    # -- step-ups -------------------------------------------------------------------------

    def step_up(self):
        """Logs the admin in again with a TOTP code unless the last such login is recent: money
        actions need a step-up of the last five minutes."""
        with self.lock:
            if time.time() - self.stepped_up_at < 200:
                return
            self.stepped_up_at = time.time()
        self.admin.fresh_token()

    def money(self, method, path, body=None, headers=None):
        """An admin's money action (payout runs, rates, refunds, review releases)."""
        self.step_up()
        status, answer = self.admin.call(method, path, body, headers)
        if status == 403 and isinstance(answer, dict) and answer.get("code") == "step_up_required":
            self.problem(f"{method} {path}: step_up_required with a TOTP login of {time.time() - self.stepped_up_at:.0f} s ago")
            self.stepped_up_at = 0.0
            self.step_up()
            status, answer = self.admin.call(method, path, body, headers)
        return status, answer

    def owner_step_up(self, store):
        """A step-up token of a store's owner, from one of its recovery codes."""
        owner = store["owner"]
        code = owner.recovery_codes.pop()
        return must([200], owner.call("POST", "/api/v1/auth/step-up", {"recovery_code": code}), "owner step-up")["access_token"]

    def refuse_payouts_of_first_store(self):
        """The first store's owner enrols an authenticator (payout destinations need a step-up),
        then sends its payouts where the provider refuses them."""
        store = self.stores[0]
        owner = store["owner"]
        status, answer = owner.call("PUT", "/api/v1/payouts/destination", {"destination": REFUSED})
        if status != 403 or answer.get("code") != "step_up_required":
            self.problem(f"a store owner without a step-up set a payout destination: {status} {answer}")
        enrolment = must([201], owner.call("POST", "/api/v1/auth/totp"), "enrol an authenticator")
        owner.totp_secret = enrolment["secret"]
        owner.recovery_codes = must([200], owner.call("POST", "/api/v1/auth/totp/confirm", {"code": totp(enrolment["secret"])}),
                                    "confirm the authenticator")["recovery_codes"]
        self.set_destination(store, REFUSED)
        # An admin may name any party's destination: a courier's, here.
        account = f"courier_payable:{self.couriers[0].id}"
        body = {"destination": "acct_probe_rider", "account": account}
        seen = must([200], self.money("PUT", "/api/v1/payouts/destination", body), "an admin sets a courier's destination")
        if seen.get("account") != account or seen.get("destination") != "acct_probe_rider":
            self.problem(f"the admin's destination for {account} came back as {seen}")

    def set_destination(self, store, destination):
        token = self.owner_step_up(store)
        must([200], patient(self.base, "PUT", "/api/v1/payouts/destination", {"destination": destination}, token),
             "payout destination")
        seen = must([200], store["owner"].call("GET", "/api/v1/payouts/destination"), "payout destination")
        if seen.get("destination") != destination or seen.get("account") != f"store_payable:{store['id']}":
            self.problem(f"the first store's destination reads {seen}, not {destination}")

    # -- orders ---------------------------------------------------------------------------

    def keyed(self, send, method, path, body, key, seconds=60):
        """A call under an Idempotency-Key. A node killed while it held the key leaves it taken
        until its lease runs out (HEXMARKET_IDEMPOTENCY_LEASE_SECS, 30 s): the README says to
        retry on 409 `request_in_progress`."""
        deadline = time.time() + seconds
        while True:
            status, answer = send(method, path, body, {"Idempotency-Key": key})
            busy = status == 409 and isinstance(answer, dict) and answer.get("code") == "request_in_progress"
            if not busy or time.time() > deadline:
                return status, answer
            time.sleep(0.5)

    def checkout(self, customer, items, patience=0, coupon=None):
        """Fills the customer's cart with `items` (product, quantity) and checks out (with
        `coupon`, or without it once it is exhausted): (order, payment). A 409 (stock not back
        on sale yet) is tried again for `patience` seconds."""
        deadline = time.time() + patience
        with customer.cart:
            for product, quantity in items:
                must([200], customer.call("POST", "/api/v1/cart/items", {"product_id": product, "quantity": quantity}), "cart")
            if coupon:
                status, priced = customer.call("GET", f"/api/v1/cart?coupon_code={coupon}")
                if status == 200 and not priced.get("coupon"):
                    self.problem(f"the cart priced with {coupon} shows no coupon: {priced}")
                elif status != 200 and (status, priced.get("code")) != (409, "coupon_exhausted"):
                    self.problem(f"the cart priced with {coupon}: {status} {priced}")
            while True:
                body = {"delivery_address": HOME, "payment_method": "simulated"}
                if coupon:
                    body["coupon_code"] = coupon
                status, placed = self.keyed(customer.call, "POST", "/api/v1/checkout", body, str(uuid.uuid4()))
                if status == 201:
                    break
                if status == 409 and isinstance(placed, dict) and placed.get("code") == "coupon_exhausted":
                    with self.lock:
                        self.figures["checkouts refused coupon_exhausted"] += 1
                    coupon = None
                    continue
                if status != 409 or time.time() > deadline:
                    raise Refused(f"checkout: {status} {placed}")
                time.sleep(0.25)
        if len(placed["orders"]) != 1:
            raise Refused(f"one store's cart became {len(placed['orders'])} orders")
        return placed["orders"][0]["id"], placed["payment"]["id"]

    def pay(self, customer, payment, outcome="succeed"):
        status, answer = customer.call("POST", f"/api/v1/payments/{payment}/simulate", {"outcome": outcome})
        if status not in (200, 409):
            raise Refused(f"pay {payment}: {status} {answer}")

    def wait_status(self, person, order, statuses, seconds=30):
        deadline = time.time() + seconds
        while True:
            seen = must([200], person.call("GET", f"/api/v1/orders/{order}"), "order")
            if seen["status"] in statuses:
                return seen
            if time.time() > deadline:
                raise Refused(f"order {order} stayed {seen['status']}, not {sorted(statuses)}")
            time.sleep(0.25)

    def step(self, person, order, step, body=None):
        status, answer = person.call("POST", f"/api/v1/orders/{order}/{step}", body or {})
        if status == 200:
            return
        if status == 409:
            # Done before a crash took the answer, or overtaken (a courier already on it).
            seen = must([200], person.call("GET", f"/api/v1/orders/{order}"), "order")
            if seen["status"] not in ("paid", "pending_payment"):
                return
        raise Refused(f"{step} {order}: {status} {answer}")

    def refund(self, order, lines, key):
        """An admin refunds lines of an order (or, with none, what is left of it)."""
        body = {"lines": lines} if lines else {}
        seen = must([200], self.keyed(self.money, "POST", f"/api/v1/admin/orders/{order}/refund", body, key), f"refund {order}")
        if not any(r["reference"] == f"admin:{key}" for r in seen["refunds"]):
            self.problem(f"refund {key} of {order} answered 200 but is not among its refunds: {seen['refunds']}")

    def order(self, n):
        """Order n as plan(n) says, up to the store's last step (the couriers do the rest)."""
        p = plan(n)
        customer = self.customers[n % CUSTOMERS]
        store = self.stores[p["store"]]
        items = [(store["products"][0], 1)] + ([(store["products"][1], 2)] if p["two_lines"] else [])
        placing = time.time()
        order, payment = self.checkout(customer, items, coupon=COUPON if p["coupon"] else None)
        with self.lock:
            self.orders[order] = {**p, "id": order, "customer": customer, "store_id": store["id"],
                                  "placed": (placing, time.time())}
            if p["away"]:
                self.away.add(order)
        if p["payment"] == "late":
            # The order expires first (its stock goes back on sale); the payment then revives it.
            self.wait_status(customer, order, {"expired"}, PAYMENT_TIMEOUT_SECS + 20)
        if p["outcome"] == "cancel_unpaid":
            self.step(customer, order, "cancel")
            seen = must([200], customer.call("GET", f"/api/v1/orders/{order}"), "order")
            if seen["status"] != "cancelled":
                # It expired first (a slow moment, a crash): the payment revives it instead.
                say(f"order {order} was {seen['status']} before its customer could cancel it: paid late instead")
                with self.lock:
                    p = self.orders[order] = {**self.orders[order], "outcome": "deliver", "payment": "late"}
                    self.expected += 1
        self.pay(customer, payment, "fail" if p["payment"] == "fail" else "succeed")
        if p["payment"] == "fail":
            return
        if p["outcome"] == "cancel_unpaid":
            self.wait_returned(customer, order)
            return
        seen = self.wait_status(customer, order, {"paid"}, 20)
        self.codes[order] = seen["handoff_code"]
        if p["outcome"] == "cancel":
            self.step(customer, order, "cancel")
            return
        if p["outcome"] == "reject":
            self.step(store["owner"], order, "reject", {"reason": "out of dough"})
            return
        self.fulfil(store, order, p["line_refund"] == "before" and store["products"][1])

    def fulfil(self, store, order, refund_line=None):
        self.step(store["owner"], order, "accept")
        self.step(store["owner"], order, "preparing")
        if refund_line:
            self.refund(order, [refund_line], f"line-{order}")
        self.step(store["owner"], order, "ready")

    def returned(self):
        """A payment that arrives after its order expired and its last unit was sold to someone
        else: the order cannot be served, and the payment goes back (payment_returned)."""
        store = self.stores[1]
        placing = time.time()
        late, late_payment = self.checkout(self.latecomer, [(store["last_one"], 1)])
        with self.lock:
            self.orders[late] = {**special("returned", 1, "returned"), "id": late, "customer": self.latecomer,
                                 "store_id": store["id"], "placed": (placing, time.time())}
        self.wait_status(self.latecomer, late, {"expired"}, PAYMENT_TIMEOUT_SECS + 20)
        placing = time.time()
        # The expired order's unit goes back on sale just after its status says so.
        rival, rival_payment = self.checkout(self.rival, [(store["last_one"], 1)], patience=10)
        with self.lock:
            self.orders[rival] = {**special("rival", 1, "deliver"), "id": rival, "customer": self.rival,
                                  "store_id": store["id"], "placed": (placing, time.time())}
        self.pay(self.rival, rival_payment)
        self.codes[rival] = self.wait_status(self.rival, rival, {"paid"}, 20)["handoff_code"]
        self.pay(self.latecomer, late_payment)
        self.wait_returned(self.latecomer, late)
        self.fulfil(store, rival)

    def handed_over(self, order):
        """A courier handed an order over: a line refund meant for the hold is made now, while
        the release waits for the hold to end (off the courier's thread)."""
        p = self.orders.get(order)
        if p and p["line_refund"] == "hold" and order not in self.hold_refunds:
            self.hold_refunds[order] = self.helpers.submit(
                self.safe, self.refund, order, [self.stores[p["store"]]["products"][1]], f"line-{order}")

    def wait_returned(self, customer, order, seconds=20):
        """Waits until a payment the order could not be served for is given back."""
        deadline = time.time() + seconds
        while True:
            seen = must([200], customer.call("GET", f"/api/v1/orders/{order}"), "order")
            if seen.get("payment_returned"):
                return
            if time.time() > deadline:
                raise Refused(f"a payment for {seen['status']} order {order}, which cannot be served, was not given back: {seen}")
            time.sleep(0.25)

    def safe(self, job, *args):
        try:
            job(*args)
            return None
        except Refused as e:
            return str(e)

    # -- the run --------------------------------------------------------------------------

    def crash(self, why):
        with self.crashing:
            killed = time.time()
            self.node.kill()
            self.node.start()
            self.offline.append((killed, time.time()))
            self.kills += 1
        say(f"SIGKILL {self.kills} ({why}): {len(self.delivered)} handovers, {len(self.orders)} orders placed; "
            f"up again in {time.time() - killed:.1f} s")

    def payout_run(self, kill=False):
        """Asks for a payout run and waits until it is done. With `kill`, SIGKILLs the node as
        soon as the run is being made (its first payout is listed; the node takes a run up after
        the booking round in progress), so that it is made again after the restart."""
        run = must([202], self.money("POST", "/api/v1/admin/payouts/runs"), "payout run")
        asked = time.time()
        if run.get("status") != "requested":
            self.problem(f"a new payout run is {run.get('status')}, not requested")
        self.runs.append(run["id"])
        if kill:
            deadline = time.time() + 60
            while time.time() < deadline:
                status, page = self.admin.call("GET", "/api/v1/payouts?limit=1")
                if status == 200 and page["items"] and page["items"][0]["run_id"] == run["id"]:
                    break
                time.sleep(0.02)
            self.crash(f"payout run {len(self.runs)} being made, {time.time() - asked:.1f} s after asking")
        deadline = time.time() + 60
        while True:
            seen = must([200], self.admin.call("GET", f"/api/v1/admin/payouts/runs/{run['id']}"), "payout run")
            if seen["status"] == "done":
                seen["took"] = epoch(seen["finished_at"]) - epoch(seen["requested_at"])
                return seen
            if time.time() > deadline:
                raise Refused(f"payout run {run['id']} still {seen['status']} after 60 s")
            time.sleep(0.25)

    def store_payouts(self, store, run):
        """A store's payouts of one run, each once (a payout listed twice is judged at the end)."""
        page = must([200], self.admin.call("GET", f"/api/v1/payouts?account=store_payable:{store['id']}&limit=100"), "payouts")
        return list({p["id"]: p for p in page["items"] if p["run_id"] == run}.values())

    def owed(self, account):
        seen = must([200], self.admin.call("GET", f"/api/v1/ledger/accounts/{account}"), "account")
        return sum(m["amount_minor"] for m in seen.get("owed", []))

    def watch_booking(self):
        """How long after its order event each transaction is listed (booking is asynchronous):
        reported, not judged."""
        after = 0
        while not self.finished.is_set():
            status, page = self.admin.call("GET", f"/api/v1/admin/ledger/transactions?limit=1000&after={after}")
            now = time.time()
            if status == 200:
                for tx in page["items"]:
                    if tx["kind"] in ("payment", "refund", "payment_returned"):
                        self.lags.append((epoch(tx["at"]), now - epoch(tx["at"])))
                    after = max(after, tx["seq"])
            time.sleep(1)

    def reach(self, share):
        """Waits until that share of the handovers expected is made; False once the run ended."""
        while len(self.delivered) < self.expected * share and not self.finished.is_set():
            time.sleep(0.1)
        return not self.finished.is_set()

    def crashes(self):
        """SIGKILLs at a quarter and at half of the handovers; new default rates in between."""
        if self.reach(1 / 4):
            self.crash("a quarter of the handovers")
        if self.reach(1 / 3):
            asked = time.time()
            seen = must([200], self.money("PUT", "/api/v1/admin/ledger/rates", NEW_DEFAULT_RATES), "default rates")
            if seen != NEW_DEFAULT_RATES:
                self.problem(f"PUT default rates answered {seen}")
            self.rates_changed = (asked, time.time())
            say(f"new default rates {NEW_DEFAULT_RATES} ({len(self.orders)} orders placed)")
        if self.reach(1 / 2):
            self.crash("half of the handovers")

    def mid_way_payouts(self):
        """A payout run at a third of the handovers (the first store's money to a destination the
        provider refuses), and another at three quarters, with a SIGKILL as soon as it is being made."""
        first = self.stores[0]
        if not self.reach(1 / 3):
            return
        # The first store's verified deliveries are released after the hold: then its payable
        # money goes where the provider refuses it.
        deadline = time.time() + 60
        while self.owed(f"store_payable:{first['id']}") <= 0:
            if time.time() > deadline:
                raise Refused("nothing of the first store became payable in 60 s after a third of the handovers")
            time.sleep(0.5)
        say(f"the first store's money is payable ({len(self.delivered)} handovers): payout run 1")
        run = self.payout_run()
        refused = self.store_payouts(first, run["id"])
        if [p["status"] for p in refused] != ["failed"] or refused[0].get("destination") != REFUSED:
            self.problem(f"the first store's payout to {REFUSED} in run 1 is {refused}, not one failed payout")
        say(f"payout run 1 (made in {run['took']:.1f} s): {run['payouts']} payouts, "
            f"the refused store's {[p['status'] for p in refused]}")
        self.set_destination(first, WORKING)
        if not self.reach(3 / 4):
            return
        run = self.payout_run(kill=True)
        paid = self.store_payouts(first, run["id"])
        if [p["status"] for p in paid] != ["paid"] or paid[0].get("destination") != WORKING:
            self.problem(f"the first store's payout to {WORKING} in run 2 is {paid}, not one paid payout")
        say(f"payout run 2 (SIGKILL while being made; made in {run['took']:.1f} s): {run['payouts']} payouts, "
            f"the first store's {[p['status'] for p in paid]}")

    def run(self):
        self.expected = sum(plan(n)["outcome"] == "deliver" for n in range(ORDERS)) + 1  # and the rival's
        self.threads = [LedgerCourier(self, courier, i) for i, courier in enumerate(self.couriers)]
        for thread in self.threads:
            thread.start()
        conductor_failure = []

        def conducting(job):
            try:
                job()
            except Refused as e:
                conductor_failure.append(str(e))

        conductors = [threading.Thread(target=conducting, args=(job,), daemon=True)
                      for job in (self.crashes, self.mid_way_payouts)]
        threading.Thread(target=self.watch_booking, daemon=True).start()
        for conductor in conductors:
            conductor.start()
        with ThreadPoolExecutor(6) as pool:
            jobs = [pool.submit(self.safe, self.returned)] + [pool.submit(self.safe, self.order, n) for n in range(ORDERS)]
            failures = [f for f in (job.result() for job in jobs) if f]
        if failures:
            raise Refused(f"{len(failures)} orders failed, the first: {failures[0]}")
        say(f"{ORDERS + 2} orders placed in {time.time() - self.started:.0f} s")
        deadline, asked = time.time() + 240, time.time()
        while True:
            broken = [c.failure for c in self.threads if c.failure]
            if broken:
                raise Refused(f"a courier failed: {broken[0]}")
            if conductor_failure:
                raise Refused(conductor_failure[0])
            waiting = [o for o, p in self.orders.items() if p["outcome"] == "deliver" and o not in self.delivered]
            if time.time() - asked > 5:
                # A courier whose acknowledgement a crash took finds the order delivered on its
                # next round, and lets it go without counting it.
                asked = time.time()
                for order in waiting:
                    if self.admin.call("GET", f"/api/v1/orders/{order}")[1].get("status") == "delivered":
                        self.delivered.add(order)
            if not waiting and not any(c.is_alive() for c in conductors):
                break
            if time.time() > deadline:
                states = collections.Counter(self.admin.call("GET", f"/api/v1/orders/{o}")[1].get("status") for o in waiting)
                raise Refused(f"{len(waiting)} orders never delivered: {dict(states)}")
            time.sleep(0.5)
        self.finished.set()
        for order, p in self.orders.items():
            if p["line_refund"] == "hold" and order not in self.hold_refunds:
                # Handed over as a crash took the courier's acknowledgement: refunded now.
                self.handed_over(order)
        failures = [f for f in (job.result() for job in self.hold_refunds.values()) if f]
        if failures:
            raise Refused(f"a refund during the hold failed: {failures[0]}")
        say(f"{len(self.delivered)} handovers in {time.time() - self.started:.0f} s, "
            f"{len(self.hold_refunds)} line refunds during the hold")
        self.after_delivery()

    def after_delivery(self):
        """Refunds after the release (and for some, after the payout), the delivery held for
        review released, and the last payout run once everything is booked and the hold is over."""
        late = [o for o, p in self.orders.items() if p["line_refund"] == "after"]
        self.wait_booked("releases before the late refunds", lambda o: o["id"] not in late or o["released"])
        for order in late:
            p = self.orders[order]
            self.refund(order, [self.stores[p["store"]]["products"][1]], f"line-{order}")
            if p["refund_rest"]:
                self.refund(order, [], f"rest-{order}")
        # The ledger books a delivery within seconds (longer across a crash): until then it is
        # not held for review yet.
        deadline = time.time() + 30
        held = self.reviews()
        while sorted(held) != sorted(self.away) and time.time() < deadline:
            time.sleep(0.5)
            held = self.reviews()
        if sorted(held) != sorted(self.away):
            self.problem(f"held for review: {held}, not the deliveries handed over away from the drop-off {sorted(self.away)}")
        for order in self.away:
            txs = self.transactions()
            if any(t["key"] == f"release:{order}" for t in txs):
                self.problem(f"the unverified delivery {order} was released without a review")
            status, answer = self.money("POST", f"/api/v1/admin/ledger/reviews/{order}/release")
            if status != 202:
                self.problem(f"release of the reviewed delivery {order}: {status} {answer}")
            self.reviewed.add(order)
            status, answer = self.money("POST", f"/api/v1/admin/ledger/reviews/{order}/release")
            if status != 404:
                self.problem(f"a second release of the reviewed delivery {order}: {status} {answer}, not 404")
        self.wait_booked("every order's money before the last payout run", lambda o: o["booked"])
        run = self.payout_run()
        say(f"payout run 3 (the last; made in {run['took']:.1f} s): {run['payouts']} payouts")

    # -- reading the ledger ---------------------------------------------------------------

    def transactions(self):
        txs, after = [], None
        while True:
            page = must([200], self.admin.call("GET", "/api/v1/admin/ledger/transactions?limit=250"
                                                + (f"&after={after}" if after is not None else "")), "transactions")
            txs += page["items"]
            after = page.get("next_after")
            if after is None:
                return txs

    def balances(self):
        found, cursor = {}, None
        while True:
            path = "/api/v1/ledger/accounts?limit=20" + (f"&cursor={cursor}" if cursor else "")
            page = must([200], self.admin.call("GET", path), "accounts")
            for item in page["items"]:
                if item["account"] in found:
                    self.problem(f"account {item['account']} listed twice")
                found[item["account"]] = {m["currency"]: m["amount_minor"] for m in item["balance"]}
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def payouts(self, account=None, person=None):
        """Every payout (of one account) as an admin, or as `person` (their own), a page at a time."""
        found, cursor = [], None
        while True:
            query = "limit=25" + (f"&account={account}" if account else "") + (f"&cursor={cursor}" if cursor else "")
            page = must([200], (person or self.admin).call("GET", f"/api/v1/payouts?{query}"), "payouts")
            found += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return found

    def unique(self, listed, where):
        """Payouts by id, each once; a payout a list names more than once is a violation."""
        seen = {}
        for payout in listed:
            seen.setdefault(payout["id"], []).append(payout)
        for pid, copies in seen.items():
            if len(copies) > 1:
                self.problem(f"{where} lists payout {pid} {len(copies)} times (run {copies[0]['run_id']}, "
                             f"{copies[0]['account']}, {copies[0]['amount']['amount_minor']}, {copies[0]['status']})")
        return [copies[0] for copies in seen.values()]

    def reviews(self):
        page = must([200], self.admin.call("GET", "/api/v1/admin/ledger/reviews?limit=100"), "reviews")
        return [r["order_id"] for r in page["items"]]

    def read_order(self, order):
        record = must([200], self.admin.call("GET", f"/api/v1/orders/{order}"), "order")
        log = must([200], self.admin.call("GET", f"/api/v1/orders/{order}/events?limit=100"), "order events")
        return record, log["events"]

    def snapshot(self):
        """Every order as the node has it, with its log, and every transaction by order."""
        with ThreadPoolExecutor(4) as pool:
            read = dict(zip(self.orders, pool.map(self.read_order, list(self.orders))))
        txs = self.transactions()
        by_order = collections.defaultdict(list)
        for tx in txs:
            if tx.get("order_id"):
                by_order[tx["order_id"]].append(tx)
        return read, txs, by_order

    def due(self, order, record, events, keys):
        """The keys the ledger must hold for one order now (a release once its hold is over)."""
        wanted = []
        for event in events:
            kind = kind_of(event)
            if kind in ("paid", "refunded", "payment_returned"):
                wanted.append(f"order:{order}:{event['seq']}")
            if kind == "delivered":
                # Released once the hold is over (and the ledger's round came), or once an admin
                # released a delivery held for review.
                verified = event["kind"].get("at_drop_off") and order not in self.away
                if (verified and epoch(event["at"]) + HOLD_SECS + 1 < time.time()) or order in self.reviewed:
                    wanted.append(f"release:{order}")
        # A paid order that was cancelled or rejected is refunded whole, by hexmarket itself.
        refunded = sum(r["amount"]["amount_minor"] for r in record["refunds"])
        total = record["totals"]["total"]["amount_minor"]
        if record["status"] in ("cancelled", "rejected") and record.get("paid_at") and refunded != total:
            wanted.append(f"the whole refund of {record['status']} {order}")
        return [w for w in wanted if w not in keys]

    def wait_booked(self, what, ready, seconds=60):
        """Waits (booking is asynchronous) until the ledger holds what the orders' logs call for
        and `ready` holds for every order; names what is still missing when it does not."""
        deadline = time.time() + seconds
        while True:
            read, txs, by_order = self.snapshot()
            keys = {t["key"] for t in txs}
            missing, unready = [], []
            for order, (record, events) in read.items():
                missing += self.due(order, record, events, keys)
                view = {"id": order, "released": f"release:{order}" in keys, "booked": not self.due(order, record, events, keys)}
                if not ready(view):
                    unready.append(order)
            if not missing and not unready:
                return
            if time.time() > deadline:
                self.problem(f"{what}: after {seconds} s the ledger still lacks {len(missing)} transaction(s), "
                             f"e.g. {missing[:5]}; not ready: {unready[:5]}")
                return
            time.sleep(1)

    # -- the checks -----------------------------------------------------------------------

    def check(self):
        run = self.runs[-1]
        read, txs, by_order = self.snapshot()
        balances = self.balances()
        summary = must([200], self.admin.call("GET", "/api/v1/admin/ledger/summary"), "summary")
        payouts = self.unique(self.payouts(), "GET /payouts")
        self.check_transactions(txs, summary)
        self.check_balances(txs, balances, summary)
        refunds = self.check_orders(read, by_order)
        self.check_leftovers(txs, balances)
        self.check_payouts(txs, balances, payouts)
        self.check_statements(txs, balances, payouts)
        self.check_reconciliation(read, payouts, txs)
        self.check_coupon(read)
        self.check_trouble()
        if self.lags:
            # A restarted node books nothing until the ledger lease of the node it replaced (a
            # new node id each start) runs out: events waiting across a SIGKILL wait that long.
            lags = sorted(lag for _, lag in self.lags)
            calm = sorted(lag for at, lag in self.lags
                          if not any(at <= up + 16 and at + lag >= down for down, up in self.offline[1:]))
            calm_median = calm[len(calm) // 2] if calm else 0
            say(f"booking lag of {len(lags)} order transactions: median {lags[len(lags) // 2]:.1f} s, "
                f"90th percentile {lags[len(lags) * 9 // 10]:.1f} s, max {lags[-1]:.1f} s; of the {len(calm)} "
                f"not waiting across a SIGKILL: median {calm_median:.1f} s, max {max(calm, default=0):.1f} s")
        if self.dropped_fixes:
            say(f"the node dropped {sum(self.dropped_fixes.values())} GPS fixes of {len(self.dropped_fixes)} couriers")
        paid = [p for p in payouts if p["status"] == "paid"]
        figures = (f"{len(read)} orders, {sum(r['status'] == 'delivered' for r, _ in read.values())} delivered, "
                   f"{refunds} refunds, {len(payouts)} payouts ({len(paid)} paid), {len(self.runs)} runs, "
                   f"{len(txs)} transactions, {self.kills} SIGKILLs, {time.time() - self.started:.0f} s")
        say("checked: " + ", ".join(f"{n} {what}" for what, n in sorted(self.figures.items())))
        if self.problems:
            for p in self.problems[:80]:
                say(p)
            raise Refused(f"{len(self.problems)} violation(s); {figures}")
        say(f"the ledger held across {self.kills} SIGKILLs (last run {run}): {figures}")

    def check_transactions(self, txs, summary):
        """1. Each transaction: two or more entries, none zero, summing to zero per currency;
        keys and positions unique."""
        keys, seqs = collections.Counter(t["key"] for t in txs), collections.Counter(t["seq"] for t in txs)
        for key, n in keys.items():
            if n > 1:
                self.problem(f"transaction key {key} booked {n} times")
        for seq, n in seqs.items():
            if n > 1:
                self.problem(f"ledger position {seq} holds {n} transactions")
        for tx in txs:
            sums = collections.Counter()
            for entry in tx["entries"]:
                sums[entry["amount"]["currency"]] += entry["amount"]["amount_minor"]
                if entry["amount"]["amount_minor"] == 0:
                    self.problem(f"{tx['key']} has an entry of zero on {entry['account']}")
            if len(tx["entries"]) < 2:
                self.problem(f"{tx['key']} has {len(tx['entries'])} entries")
            for currency, total in sums.items():
                if total != 0:
                    self.problem(f"{tx['key']} sums to {total} {currency}")
        if txs and summary["transactions"] < max(seqs):
            self.problem(f"the summary counts {summary['transactions']} positions, the last transaction is at {max(seqs)}")

    def check_balances(self, txs, balances, summary):
        """2. The summary balances, and every account's balance is what its entries add up to."""
        if not summary["balanced"] or any(m["amount_minor"] != 0 for m in summary["sums"]):
            self.problem(f"the summary does not balance: {summary['sums']} (balanced: {summary['balanced']})")
        listed = collections.Counter()
        for account, balance in balances.items():
            for currency, amount in balance.items():
                listed[currency] += amount
        if any(listed.values()):
            self.problem(f"the listed balances sum to {dict(listed)}")
        computed = collections.defaultdict(collections.Counter)
        for tx in txs:
            for entry in tx["entries"]:
                computed[entry["account"]][entry["amount"]["currency"]] += entry["amount"]["amount_minor"]
        for account in set(computed) | set(balances):
            want = {c: a for c, a in computed[account].items() if a}
            got = {c: a for c, a in balances.get(account, {}).items() if a}
            if want != got:
                self.problem(f"{account}: balance {got}, its entries add up to {want}")
        platform = {b["account"]: {m["currency"]: m["amount_minor"] for m in b["balance"] if m["amount_minor"]}
                    for b in summary["platform"]}
        for account, balance in platform.items():
            if balance != {c: a for c, a in computed[account].items() if a}:
                self.problem(f"the summary's {account} is {balance}, its entries add up to {dict(computed[account])}")

    def check_orders(self, read, by_order):
        """3. Each order's transactions against its log and its frozen rates. Returns how many
        refunds there were."""
        refunds_seen = 0
        for order, (record, events) in read.items():
            p = self.orders[order]
            txs = by_order.get(order, [])
            by_key = {t["key"]: t for t in txs}
            vendor = record["vendor_id"]
            pending, payable = f"store_pending:{vendor}", f"store_payable:{vendor}"
            courier_payable = f"courier_payable:{record['courier_id']}" if record.get("courier_id") else None
            expected_rates = self.rates_of(p, vendor)
            if record.get("rates") not in expected_rates:
                self.problem(f"order {order} froze rates {record.get('rates')}, not its store's {expected_rates}")
            rates = record.get("rates") or expected_rates[0]
            totals = record["totals"]
            subtotal, fee = totals["subtotal"]["amount_minor"], totals["delivery_fee"]["amount_minor"]
            discount = record.get("discount")
            off = 0
            if discount:
                off = discount["amount"]["amount_minor"]
                if not p["coupon"] or discount["code"] != COUPON or discount["funded_by"] != "store" or \
                        off != subtotal * COUPON_BPS // 10000 or record["vendor_id"] != self.stores[1]["id"]:
                    self.problem(f"order {order} carries the discount {discount} (asked for a coupon: {p['coupon']})")
                self.figures["orders with the coupon"] += 1
            if totals["total"]["amount_minor"] != subtotal + fee - off:
                self.problem(f"order {order}: total {totals['total']} is not goods + delivery - discount {off}")
            shares = expected_shares(subtotal - off, fee, rates)
            total = totals["total"]["amount_minor"]
            kinds = collections.Counter(t["kind"] for t in txs)
            paid_events = [e for e in events if kind_of(e) == "paid"]
            if p["payment"] == "late":
                story = [kind_of(e) for e in events if kind_of(e) in ("expired", "paid")]
                if story != ["expired", "paid"]:
                    self.problem(f"order {order} paid late: its log goes {story}, not expired then paid (revived)")
                else:
                    self.figures["late payments"] += 1

            # The payment.
            if record.get("paid_at"):
                if kinds["payment"] != 1 or len(paid_events) != 1:
                    self.problem(f"order {order}: {kinds['payment']} payment transactions, {len(paid_events)} paid events")
                tx = by_key.get(f"order:{order}:{paid_events[0]['seq']}") if paid_events else None
                want = {"provider_clearing": total, pending: -shares["store"], "platform_commission": -shares["commission"],
                        "courier_fees_held": -shares["courier"], "delivery_fees": -shares["delivery"]}
                want = {a: v for a, v in want.items() if v}
                if tx is None or tx["kind"] != "payment" or dict(amounts(tx)) != want:
                    self.problem(f"order {order}: payment {tx and dict(amounts(tx))}, by rates {rates} of {totals} it is {want}")
            elif kinds["payment"]:
                self.problem(f"order {order} was never paid ({record['status']}) but has a payment transaction")

            # The refunds, in the log's order: each shared in proportion to what the ones before
            # it left of each share, out of pending money before the release, payable after it.
            release = by_key.get(f"release:{order}")
            taken = collections.Counter()
            refunded = 0
            refund_events = [e for e in events if kind_of(e) == "refunded"]
            if kinds["refund"] != len(refund_events):
                self.problem(f"order {order}: {kinds['refund']} refund transactions for {len(refund_events)} refunds")
            for event in refund_events:
                refunds_seen += 1
                amount = event["kind"]["amount"]["amount_minor"]
                refunded += amount
                tx = by_key.get(f"order:{order}:{event['seq']}")
                if tx is None or tx["kind"] != "refund":
                    self.problem(f"order {order}: no refund transaction for the refund at {event['seq']} ({amount})")
                    continue
                moved = amounts(tx)
                if moved["provider_clearing"] != -amount:
                    self.problem(f"order {order}: refund {tx['key']} takes {moved['provider_clearing']} from clearing, not -{amount}")
                after_release = release is not None and release.get("through") is not None and release["through"] < event["seq"]
                self.figures["refunds after the release" if after_release else "refunds before any release"] += 1
                if p["line_refund"] == "hold" and event["kind"]["lines"]:
                    self.figures[f"refunds during the hold, {'after' if after_release else 'before'} the release"] += 1
                store_from, courier_from = (payable, courier_payable) if after_release else (pending, "courier_fees_held")
                part = {"store": moved[store_from], "commission": moved["platform_commission"],
                        "courier": moved[courier_from] if courier_from else 0, "delivery": moved["delivery_fees"]}
                expected_accounts = {"provider_clearing", "platform_commission", "delivery_fees", store_from, courier_from}
                stray = {a: v for a, v in moved.items() if v and a not in expected_accounts}
                if stray:
                    self.problem(f"order {order}: refund {tx['key']} ({'after' if after_release else 'before'} the release) "
                                 f"moves {stray}")
                if any(v < 0 for v in part.values()) or sum(part.values()) != amount:
                    self.problem(f"order {order}: refund {tx['key']} of {amount} is shared {part}")
                left = {s: shares[s] - taken[s] for s in shares}
                whole = sum(left.values())
                for s in shares:
                    exact = amount * left[s] / whole if whole else 0
                    if abs(part[s] - exact) >= 1 or part[s] > left[s]:
                        self.problem(f"order {order}: refund {tx['key']} takes {part[s]} of the {s} share, "
                                     f"{exact:.2f} is its proportion of what was left {left}")
                    taken[s] += part[s]
            listed = sum(r["amount"]["amount_minor"] for r in record["refunds"])
            if listed != refunded:
                self.problem(f"order {order}: its refunds list {listed}, its log {refunded}")

            # A payment given back.
            returned = [e for e in events if kind_of(e) == "payment_returned"]
            for event in returned:
                self.figures["payments given back"] += 1
                amount = event["kind"]["amount"]["amount_minor"]
                tx = by_key.get(f"order:{order}:{event['seq']}")
                want = {"provider_clearing": 0, "unserved_payments": 0}
                if tx is None or tx["kind"] != "payment_returned" or {a: v for a, v in amounts(tx).items()} != want or \
                        sorted(e["amount"]["amount_minor"] for e in tx["entries"]) != [-amount, -amount, amount, amount]:
                    self.problem(f"order {order}: payment of {amount} given back is booked as {tx}")
            if p["outcome"] in ("returned", "cancel_unpaid") and not returned:
                self.problem(f"order {order}: a payment it could not be served for was not given back: {record['status']}")
            if kinds["payment_returned"] != len(returned):
                self.problem(f"order {order}: {kinds['payment_returned']} payment_returned transactions for {len(returned)} events")

            # Fully refunded (or never served): nothing of it stays anywhere.
            if (record.get("paid_at") and refunded == total) or (returned and not record.get("paid_at")):
                net = collections.Counter()
                for tx in txs:
                    net.update(amounts(tx))
                left_over = {a: v for a, v in net.items() if v}
                if left_over:
                    self.problem(f"order {order} was refunded whole but its transactions leave {left_over}")
            if p["outcome"] in ("cancel", "reject") and refunded != total:
                self.problem(f"order {order} ({p['outcome']}) paid {total}, refunded {refunded}")

            # The release.
            delivered = [e for e in events if kind_of(e) == "delivered"]
            if delivered:
                verified = delivered[0]["kind"].get("at_drop_off")
                if verified != (order not in self.away):
                    self.problem(f"order {order}: delivery at_drop_off={verified}, handed over "
                                 f"{'away from' if order in self.away else 'at'} the drop-off")
            if delivered and record["status"] in ("delivered", "refunded"):
                self.figures["releases"] += 1
                if kinds["release"] != 1 or release is None:
                    self.problem(f"delivered order {order} has {kinds['release']} releases")
                else:
                    through = release.get("through")
                    before = collections.Counter()
                    for event in refund_events:
                        tx = by_key.get(f"order:{order}:{event['seq']}")
                        if tx and through is not None and event["seq"] <= through:
                            moved = amounts(tx)
                            before["store"] += moved[pending]
                            before["courier"] += moved["courier_fees_held"]
                    want = {pending: shares["store"] - before["store"], payable: -(shares["store"] - before["store"]),
                            "courier_fees_held": shares["courier"] - before["courier"]}
                    want[courier_payable or "delivery_fees"] = -(shares["courier"] - before["courier"])
                    want = {a: v for a, v in want.items() if v}
                    if dict(amounts(release)) != want:
                        self.problem(f"order {order}: release through {through} moves {dict(amounts(release))}, "
                                     f"what the refunds before it left is {want}")
            elif kinds["release"]:
                self.problem(f"order {order} ({record['status']}) was never delivered but has a release")
            if p["outcome"] == "deliver" and record["status"] not in ("delivered", "refunded"):
                self.problem(f"order {order} meant for delivery is {record['status']}")
        return refunds_seen

    def rates_of(self, p, vendor):
        """The rates an order may have frozen: its store's own, or the default when it was
        placed (either one while the change was taking effect: rates are cached for 2 s)."""
        if vendor == self.stores[2]["id"]:
            return [OWN_RATES]
        placing, placed = p["placed"]
        if self.rates_changed is None or placed < self.rates_changed[0]:
            return [DEFAULT_RATES]
        if placing > self.rates_changed[1] + 2.5:
            self.figures["orders at the new default rates"] += 1
            return [NEW_DEFAULT_RATES]
        return [DEFAULT_RATES, NEW_DEFAULT_RATES]

    def check_coupon(self, read):
        """The coupon: used as often as paid orders carry it (none given back with its payment),
        never more than its limit, none left held once every order has ended."""
        seen = must([200], self.admin.call("GET", f"/api/v1/coupons/{COUPON}"), "the coupon")
        carried = sum(1 for record, events in read.values()
                      if (record.get("discount") or {}).get("code") == COUPON and record.get("paid_at")
                      and not any(kind_of(e) == "payment_returned" for e in events))
        self.figures["coupon redemptions used"] = seen["used"]
        if seen["used"] > COUPON_LIMIT or seen["used"] + seen["held"] > COUPON_LIMIT:
            self.problem(f"the coupon was redeemed beyond its limit of {COUPON_LIMIT}: {seen}")
        if seen["used"] != carried:
            self.problem(f"the coupon counts {seen['used']} used, {carried} paid orders carry it")
        if seen["held"]:
            self.problem(f"the coupon still holds {seen['held']} redemptions after every order ended")
        if self.figures["checkouts refused coupon_exhausted"] == 0 and ORDERS >= 300:
            self.problem("no checkout was refused coupon_exhausted: the limit was never reached")

    def check_leftovers(self, txs, balances):
        """4. After the last run, past the hold: nothing pending, held or in transit, and no
        party is owed anything (one owes money back only for a refund after its last payout)."""
        for account, balance in balances.items():
            amount = balance.get("EUR", 0)
            if account.startswith("store_pending:") or account in ("courier_fees_held", "payouts_in_transit", "unserved_payments"):
                if amount:
                    self.problem(f"{account} holds {amount} after the last run")
            if account.startswith(("store_payable:", "courier_payable:")):
                if amount < 0:
                    self.problem(f"{account} is owed {-amount} after the last run: a delivered order's shares never reached a payout")
                elif amount > 0:
                    seqs = [t["seq"] for t in txs if t["kind"] == "payout" and amounts(t)[account]]
                    last_payout = max(seqs, default=0)
                    if not any(t["kind"] == "refund" and amounts(t)[account] > 0 and t["seq"] > last_payout for t in txs):
                        self.problem(f"{account} owes {amount} back with no refund after its last payout")

    def check_payouts(self, txs, balances, payouts):
        """5. Payouts against the transactions, per account and per run."""
        by_key = {t["key"]: t for t in txs}
        accounts = {a for a in balances if a.startswith(("store_payable:", "courier_payable:"))}
        for payout in payouts:
            accounts.add(payout["account"])
        all_ids = {p["id"] for p in payouts}
        for account in sorted(accounts):
            listed = self.unique(self.payouts(account), f"GET /payouts?account={account}")
            if {p["id"] for p in listed} != {p["id"] for p in payouts if p["account"] == account}:
                self.problem(f"GET /payouts?account={account} and GET /payouts disagree")
            released = sum(-amounts(t)[account] for t in txs if t["kind"] == "release")
            taken_back = sum(amounts(t)[account] for t in txs if t["kind"] == "refund")
            paid = sum(p["amount"]["amount_minor"] for p in listed if p["status"] == "paid")
            owed = -balances.get(account, {}).get("EUR", 0)
            if paid + owed != released - taken_back:
                self.problem(f"{account}: paid out {paid} + owed {owed} != released {released} - refunded from payable {taken_back}")
            per_run = collections.Counter(p["run_id"] for p in listed if p["status"] == "paid")
            for run_id, n in per_run.items():
                if n > 1:
                    self.problem(f"{account} was paid {n} times in run {run_id}")
        for payout in payouts:
            pid, account, amount = payout["id"], payout["account"], payout["amount"]["amount_minor"]
            out, paid, failed = by_key.get(f"payout:{pid}"), by_key.get(f"payout:{pid}:paid"), by_key.get(f"payout:{pid}:failed")
            if out is None or out["kind"] != "payout" or dict(amounts(out)) != {account: amount, "payouts_in_transit": -amount}:
                self.problem(f"payout {pid} ({account}, {amount}) is booked out as {out}")
            if payout["status"] == "paid":
                if paid is None or failed is not None or dict(amounts(paid)) != {"payouts_in_transit": amount, "provider_clearing": -amount}:
                    self.problem(f"paid payout {pid} is ended as paid={paid and dict(amounts(paid))}, failed={failed is not None}")
                if not payout.get("provider_ref"):
                    self.problem(f"paid payout {pid} has no provider reference")
            elif payout["status"] == "failed":
                if failed is None or paid is not None or dict(amounts(failed)) != {"payouts_in_transit": amount, account: -amount}:
                    self.problem(f"failed payout {pid} is ended as failed={failed and dict(amounts(failed))}, paid={paid is not None}")
            else:
                self.problem(f"payout {pid} is still {payout['status']} after its run")
            if payout["run_id"] not in self.runs:
                self.problem(f"payout {pid} belongs to run {payout['run_id']}, which nobody asked for")
        for tx in txs:
            if tx["kind"] in ("payout", "payout_paid", "payout_failed") and tx.get("payout_id") not in all_ids:
                self.problem(f"{tx['key']} is booked for a payout GET /payouts does not list")
        for run_id in self.runs:
            run = must([200], self.admin.call("GET", f"/api/v1/admin/payouts/runs/{run_id}"), "payout run")
            mine = [p for p in payouts if p["run_id"] == run_id]
            total = sum(p["amount"]["amount_minor"] for p in mine)
            said = sum(m["amount_minor"] for m in run["total"])
            if run["status"] != "done" or run["payouts"] != len(mine) or said != total:
                self.problem(f"payout run {run_id} says {run['status']}, {run['payouts']} payouts of {said}; "
                             f"its payouts are {len(mine)} of {total}")

    def check_statements(self, txs, balances, payouts):
        """Each store's owner sees its two accounts and their statements as the ledger has them,
        and not another store's; a courier sees their own account and payouts."""
        for courier in self.couriers[:3]:
            account = f"courier_payable:{courier.id}"
            own = must([200], courier.call("GET", "/api/v1/ledger/accounts"), "own accounts")
            got = {item["account"]: {m["currency"]: m["amount_minor"] for m in item["balance"] if m["amount_minor"]}
                   for item in own["items"]}
            if got != {account: {c: a for c, a in balances.get(account, {}).items() if a}}:
                self.problem(f"a courier sees the accounts {got}, the admin {account} at {balances.get(account)}")
            mine = {p["id"] for p in self.unique(self.payouts(person=courier), f"GET /payouts as courier {courier.id}")}
            if mine != {p["id"] for p in payouts if p["account"] == account}:
                self.problem(f"courier {courier.id} sees the payouts {sorted(mine)}, the admin others")
        first = [p for p in payouts if p["account"] == f"store_payable:{self.stores[0]['id']}"]
        if first:
            status, seen = self.stores[0]["owner"].call("GET", f"/api/v1/payouts/{first[0]['id']}")
            if status != 200 or seen != first[0]:
                self.problem(f"the first store's owner reads its payout {first[0]['id']}: {status} {seen}")
            status, _ = self.stores[1]["owner"].call("GET", f"/api/v1/payouts/{first[0]['id']}")
            if status != 404:
                self.problem(f"another store's owner reads the first store's payout: {status}, not 404")
        for i, store in enumerate(self.stores):
            owner = store["owner"]
            own = must([200], owner.call("GET", "/api/v1/ledger/accounts"), "own accounts")
            names = sorted(a["account"] for a in own["items"])
            if names != sorted([f"store_pending:{store['id']}", f"store_payable:{store['id']}"]):
                self.problem(f"the owner of store {i} sees the accounts {names}")
            for item in own["items"]:
                got = {m["currency"]: m["amount_minor"] for m in item["balance"] if m["amount_minor"]}
                want = {c: a for c, a in balances.get(item["account"], {}).items() if a}
                if got != want:
                    self.problem(f"the owner of store {i} sees {item['account']} at {got}, the admin at {want}")
            account = f"store_payable:{store['id']}"
            lines, after = [], None
            while True:
                page = must([200], owner.call("GET", f"/api/v1/ledger/accounts/{account}/entries?limit=25"
                                                     + (f"&after={after}" if after is not None else "")), "statement")
                lines += page["items"]
                after = page.get("next_after")
                if after is None:
                    break
            got = [(line["seq"], line["tx_key"], line["amount"]["amount_minor"]) for line in lines]
            want = [(t["seq"], t["key"], e["amount"]["amount_minor"]) for t in txs for e in t["entries"] if e["account"] == account]
            if got != want:
                self.problem(f"the statement of {account} ({len(got)} lines) is not its entries ({len(want)})")
            other = self.stores[(i + 1) % len(self.stores)]["id"]
            status, _ = owner.call("GET", f"/api/v1/ledger/accounts/store_payable:{other}")
            if status != 404:
                self.problem(f"the owner of store {i} reads another store's account: {status}")

    def check_reconciliation(self, read, payouts, txs):
        """6. The ledger against the provider for the whole run: no difference, and the
        provider's sums are what the orders, the payouts and the ledger say."""
        period = f"from={rfc3339(self.started - 60)}&to={rfc3339(time.time() + 60)}"
        captured = sum(r["totals"]["total"]["amount_minor"] for r, _ in read.values() if r.get("paid_at") or r.get("payment_returned"))
        refunded = sum((r.get("refunded") or {}).get("amount_minor", 0) for r, _ in read.values())
        paid_out = sum(p["amount"]["amount_minor"] for p in payouts if p["status"] == "paid")
        left_clearing = -sum(amounts(t)["provider_clearing"] for t in txs if t["kind"] == "payout_paid")
        if left_clearing != paid_out:
            self.problem(f"paid payouts add up to {paid_out}, the ledger's payout_paid transactions took {left_clearing} out of clearing")
        deadline = time.time() + 30
        while True:
            report = must([200], self.admin.call("GET", f"/api/v1/admin/ledger/reconciliation?{period}"), "reconciliation")
            if not report["differences"] or time.time() > deadline:
                break
            time.sleep(1)
        for difference in report["differences"][:20]:
            self.problem(f"reconciliation: {difference}")
        seen = (report["captured"].get("EUR", 0), report["refunded"].get("EUR", 0), report["paid_out"].get("EUR", 0))
        if seen != (captured, refunded, paid_out):
            self.problem(f"reconciliation: captured, refunded, paid out {seen}; the orders and payouts say {(captured, refunded, paid_out)}")
        if report["payments"] != len(read) or report["payouts"] != len(payouts):
            self.problem(f"reconciliation compared {report['payments']} payments and {report['payouts']} payouts, "
                         f"not {len(read)} and {len(payouts)}")

    def check_trouble(self):
        """7. No 5xx or refused connection while the node was up; no panic."""
        for at, method, path, what in TROUBLE:
            if not any(down <= at <= up for down, up in self.offline):
                self.problem(f"{method} {path} while the node was up ({at - self.started:.1f} s in): {what}")
        with open(self.node.log, errors="replace") as f:
            log = f.read()
        if "panicked" in log:
            self.problem("the node panicked: " + log[log.index("panicked") - 200:][:600])


def main(binary, work):
    probe = Probe(binary, work)
    try:
        probe.setup()
        probe.run()
        probe.check()
    finally:
        probe.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Refused as e:
        sys.exit(f"ledger: {e}")
