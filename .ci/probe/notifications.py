#!/usr/bin/env python3
"""Order notifications from outside, on every channel, across a crash.

    notifications.py HEXMARKET_BIN WORK_DIR

Starts the receivers of receivers.py (an SMTP sink, a Twilio Messages API, a Web Push service
that checks VAPID and decrypts, a webhook receiver that checks signatures) and a hexmarket node
wired to them, creates an admin with the CLI and seeds a store through the API (seed.py). Then,
through the public API and WebSockets only, as the README describes them:

  - customers sign up, some verify a phone by the code texted to them, some subscribe browsers
    to Web Push (one of them a browser its push service has dropped: 410), some change their
    notification preferences or language; the store's owner subscribes a browser; the store
    and the admin register webhook endpoints; couriers go online next to the store;
  - ORDERS orders are bought and paid (some payments fail); the store declines some, customers
    cancel some, the store accepts and prepares the rest; couriers take the offers, pick the
    orders up, ride to the customer (the arriving geofence) and hand them over with the code;
  - halfway, the node is killed with SIGKILL and started again on the same data directory;
    every client carries on (retrying what the crash interrupted).

Afterwards each order's event log (GET /orders/{id}/events) and the README's table of who hears
of what on which channel give the messages expected; every receiver and every in-app feed must
hold exactly those. A message may arrive twice only as the README allows: the provider took it
in the instant the node died (the receiver's answer to its first copy went back within
REPEAT_WINDOW_SECS before the kill, or after it while no node was running), and the repeat is the same message (same Message-ID, push id, webhook id, or SMS text). Exits
non-zero naming every missing, extra or repeated message."""

import collections
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import uuid
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from receivers import ARRIVALS, Mailbox, PushService, Twilio, Webhooks, free_port  # noqa: E402
from seed import STORE, Refused, call, login, must, register, seed  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

ORDERS = int(os.environ.get("PROBE_ORDERS", "200"))
CUSTOMERS = max(ORDERS // 2, 1)
CARRY = 4
COURIERS = ORDERS // CARRY + 2
SETTLE_SECS = 150
# A message whose first copy a receiver took this little before the kill may come again: the
# node died before it heard the provider's answer. Under this probe's burst (thousands of
# messages on two cores shared with the receivers and the clients) the sender's thread is
# busy, and answers wait for it: up to 3.4 s while every delivery built its own HTTP client
# (reading the system's root certificates), under 1 s since clients are kept per target. 5 s
# keeps room for a loaded machine and still fails any repeat the node had time to note.
REPEAT_WINDOW_SECS = 5.0
# The drop-off, 450 m north of the store: close enough that a courier rides there in a few
# seconds of real time at a plausible speed.
HOME = {"text": "Probe Strasse 1, Berlin", "lat": STORE["lat"] + 0.00405, "lng": STORE["lng"]}

# The README's table: (event, audience) -> default channels. The in-app feed has no switch.
DEFAULTS = {
    ("order_created", "customer"): set(),
    ("order_paid", "customer"): {"in_app", "email", "push"},
    ("order_paid", "store"): {"in_app", "email", "push"},
    ("payment_failed", "customer"): {"in_app", "email", "push"},
    ("order_accepted", "customer"): {"in_app", "push"},
    ("order_rejected", "customer"): {"in_app", "email", "push"},
    ("order_ready", "customer"): {"in_app"},
    ("order_ready", "courier"): {"in_app", "push"},
    ("courier_assigned", "customer"): {"in_app", "push"},
    ("courier_assigned", "store"): {"in_app"},
    ("courier_assigned", "courier"): {"in_app", "push"},
    ("order_picked_up", "customer"): {"in_app", "push"},
    ("order_picked_up", "store"): {"in_app"},
    ("order_arriving", "customer"): {"in_app", "sms", "push"},
    ("order_delivered", "customer"): {"in_app", "email", "push"},
    ("order_delivered", "store"): {"in_app"},
    ("order_delivered", "courier"): {"in_app"},
    ("order_cancelled", "customer"): {"in_app", "email", "push"},
    ("order_cancelled", "store"): {"in_app", "email", "push"},
    ("order_cancelled", "courier"): {"in_app", "push"},
    ("order_refunded", "customer"): {"in_app", "email", "push"},
    ("order_refunded", "store"): {"in_app", "email"},
}
MANDATORY = {("order_paid", "customer", "email"), ("order_refunded", "customer", "email")}
# Order log kinds and the notification each is.
NOTIFIED = {
    "created": "order_created", "paid": "order_paid", "payment_failed": "payment_failed",
    "accepted": "order_accepted", "rejected": "order_rejected", "ready": "order_ready",
    "courier_assigned": "courier_assigned", "picked_up": "order_picked_up",
    "arriving": "order_arriving", "delivered": "order_delivered", "cancelled": "order_cancelled",
    "refunded": "order_refunded", "payment_returned": "order_refunded",
}
STORE_HOOK_EVENTS = ["order_paid", "order_cancelled", "order_delivered", "order_refunded"]
ADMIN_HOOK_EVENTS = sorted(set(NOTIFIED.values()) - {"order_created"})


def say(text):
    print(f"notifications: {text}", file=sys.stderr, flush=True)


class Node:
    def __init__(self, binary, data, log, env):
        self.binary, self.log = binary, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HEXMARKET_DATA_DIR": data,
            "HEXMARKET_LISTEN": f"127.0.0.1:{self.port}",
            "HEXMARKET_LOG": "warn,hexmarket::notifications::sender=info",
            "HEXMARKET_COOKIE_SECURE": "false",
            "HEXMARKET_WORKERS": "2",
            "HEXMARKET_ACTOR_THREADS": "2",
            "HEXMARKET_WEBHOOK_ALLOW_PRIVATE": "true",
            # The money ledger and analytics have probes of their own (ledger.py, admin.py).
            # Here their folding would share the two cores with the receivers, whose slower
            # answers widen the instant before the kill in which a provider takes a message
            # whose answer the node never reads (REPEAT_WINDOW_SECS).
            "HEXMARKET_LEDGER": "false",
            "HEXMARKET_ANALYTICS": "false",
            **env,
        }
        self.process = None

    def create_admin(self, admin_email, password):
        return subprocess.run(
            [self.binary, "create-admin", "--email", admin_email, "--name", "Probe Admin"],
            input=password + "\n", capture_output=True, text=True, env=self.env, timeout=60, check=True,
        ).stdout

    def start(self):
        log = open(self.log, "a")
        self.process = subprocess.Popen([self.binary, "serve"], env=self.env, stdout=log, stderr=log)
        for _ in range(300):
            try:
                if call(self.base, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        sys.exit(f"the node did not start; see {self.log}")

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def patient(base, method, path, body=None, token=None, headers=None, tries=300):
    """A call that rides out the crash: a refused connection or a 5xx is tried again, and so is
    409 `request_in_progress` (a request with the same Idempotency-Key that the crash cut
    short holds its key until its lease runs out, as the README says)."""
    for _ in range(tries):
        try:
            status, answer = call(base, method, path, body, token, headers)
        except (OSError, urllib.error.URLError):
            time.sleep(0.2)
            continue
        if status >= 500:
            time.sleep(0.2)
            continue
        if status == 409 and isinstance(answer, dict) and answer.get("code") == "request_in_progress":
            time.sleep(0.5)
            continue
        return status, answer
    raise Refused(f"{method} {path}: the node never answered")


class Person:
    """An account, its password and a token that is renewed when it runs out."""

    def __init__(self, probe, account, totp_secret=None):
        self.probe, self.account, self.totp_secret = probe, account, totp_secret
        self.email = account["email"].lower()
        self.id = account.get("id")
        self.token = None
        self.lock = threading.Lock()

    def fresh_token(self):
        with self.lock:
            for _ in range(300):
                try:
                    self.token = login(self.probe.base, self.account["email"], self.account["password"], self.totp_secret)
                    return self.token
                except (OSError, urllib.error.URLError):
                    time.sleep(0.2)
                except Refused as e:
                    if " 5" not in str(e)[:60] and "never" not in str(e):
                        raise
                    time.sleep(0.2)
            raise Refused(f"login of {self.email}: the node never answered")

    def call(self, method, path, body=None, headers=None):
        token = self.token or self.fresh_token()
        status, answer = patient(self.probe.base, method, path, body, token, headers)
        if status == 401:
            status, answer = patient(self.probe.base, method, path, body, self.fresh_token(), headers)
        return status, answer


class Courier(threading.Thread):
    """A courier on /ws/courier next to the store: takes offers while at the store (up to CARRY
    orders), picks them up once all are ready, rides to the drop-off, hands each over with the
    customer's code, rides back. Reconnects whenever the socket drops."""

    def __init__(self, probe, person, index):
        super().__init__(daemon=True)
        self.probe, self.person = probe, person
        self.at = (STORE["lat"] + (index % 5) * 0.00005, STORE["lng"] + (index // 5) * 0.00005)
        self.clock = time.time() - 60
        self.ws = None
        self.carrying = []  # orders assigned, not yet handed over
        self.last_assigned = 0.0
        self.failure = None

    def run(self):
        try:
            while not self.probe.finished.is_set():
                try:
                    if self.ws is None:
                        self.connect()
                    self.pump(0.3)
                    if self.carrying and (len(self.carrying) >= CARRY or time.time() - self.last_assigned > 1.5):
                        self.trip()
                except (ConnectionClosed, OSError, InvalidStatus, TimeoutError):
                    self.drop()
                    time.sleep(0.3)
        except Exception as e:  # noqa: BLE001 - reported by the probe
            self.failure = repr(e)
        finally:
            self.drop()

    def drop(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # noqa: BLE001
                pass
        self.ws = None

    def connect(self):
        token = self.person.fresh_token()
        self.ws = connect(
            f"{self.probe.ws}/ws/courier", additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5,
            legacy=True,
        )
        self.send({"type": "go_online"})
        self.wait(lambda f: f.get("type") == "ack" and f.get("of") == "go_online", "go_online")
        self.report(self.at, 0.0)
        # What the node holds for this courier decides what is carried (a crash may have
        # taken an assignment or a handover with it).
        status, me = self.person.call("GET", "/api/v1/couriers/me")
        if status == 200:
            held = [o if isinstance(o, str) else o.get("order_id") or o.get("id") for o in me.get("orders", me.get("active_orders", []))]
            for order in held:
                if order and order not in self.carrying:
                    self.carrying.append(order)
                    self.last_assigned = time.time()

    def send(self, frame):
        self.ws.send(json.dumps(frame))

    def handle(self, frame):
        kind = frame.get("type")
        if kind == "offer":
            # Taken whenever there is room, also on the way (picked up on the next round): a
            # courier who declines is not asked again for that order.
            accept = len(self.carrying) < CARRY
            self.send({"type": "offer_response", "offer_id": frame["offer_id"], "accept": accept})
        elif kind == "assignment":
            if frame["order_id"] not in self.carrying:
                self.carrying.append(frame["order_id"])
            self.last_assigned = time.time()
        elif kind == "order_cancelled":
            if frame["order_id"] in self.carrying:
                self.carrying.remove(frame["order_id"])

    def pump(self, seconds):
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            try:
                frame = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                return
            self.handle(frame)

    def wait(self, matches, what, seconds=15):
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            try:
                frame = json.loads(self.ws.recv(timeout=left))
            except TimeoutError:
                break
            self.handle(frame)
            if matches(frame):
                return frame
        raise TimeoutError(f"no answer to {what}")

    def report(self, point, speed):
        self.clock = max(self.clock + 1.0, time.time() - 60)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.clock)) + f".{int(self.clock % 1 * 1000):03d}Z"
        self.send({"type": "location", "point": {"lat": point[0], "lng": point[1], "accuracy_m": 8.0,
                                                 "speed_mps": speed, "recorded_at": stamp}})
        self.wait(lambda f: f.get("type") == "ack" and f.get("of") == "location", "location")
        self.at = point

    def ride(self, to):
        start, legs = self.at, 9
        for leg in range(1, legs + 1):
            share = leg / legs
            self.report((start[0] + (to[0] - start[0]) * share, start[1] + (to[1] - start[1]) * share), 50.0)
            time.sleep(0.05)

    def act(self, frame_type, order, **extra):
        """Sends picked_up or delivered; True once the order is past that step (also when the
        node had done it before a crash took the ack)."""
        self.send({"type": frame_type, "order_id": order, **extra})
        answer = self.wait(lambda f: f.get("type") == "error" or (f.get("type") == "ack" and f.get("of") == frame_type), frame_type)
        if answer.get("type") == "ack":
            return True
        status, seen = self.person.call("GET", f"/api/v1/orders/{order}")
        done = {"picked_up": {"picked_up", "delivered"}, "delivered": {"delivered"}}[frame_type]
        return status == 200 and seen.get("status") in done

    def trip(self):
        # Wait (at the store) until every order in hand is ready, or has left our hands.
        ready = []
        for order in list(self.carrying):
            status, seen = self.person.call("GET", f"/api/v1/orders/{order}")
            state = seen.get("status") if status == 200 else None
            if state in ("ready_for_pickup", "courier_assigned", "picked_up"):
                ready.append(order)
            elif state in ("delivered", "cancelled", "rejected", "refunded") or status == 404:
                self.carrying.remove(order)
        if len(ready) < len(self.carrying):
            self.pump(0.3)
            return
        for order in ready:
            if not self.act("picked_up", order):
                raise TimeoutError(f"pickup of {order} refused")
        home = (HOME["lat"], HOME["lng"])
        store = self.at
        self.ride(home)
        for order in ready:
            if not self.act("delivered", order, code=self.probe.codes[order]):
                raise TimeoutError(f"handover of {order} refused")
            self.carrying.remove(order)
            self.probe.delivered.add(order)
        self.ride(store)


class Probe:
    def __init__(self, binary, work):
        self.work = work
        self.mail = Mailbox()
        self.twilio = Twilio()
        self.hooks = Webhooks()
        self.node = Node(binary, os.path.join(work, "data"), os.path.join(work, "node.log"), {
            "HEXMARKET_SMTP_URL": f"smtp://127.0.0.1:{self.mail.port}",
            "HEXMARKET_MAIL_FROM": "hexmarket <no-reply@probe.example.com>",
            "HEXMARKET_TWILIO_ACCOUNT_SID": self.twilio.sid,
            "HEXMARKET_TWILIO_AUTH_TOKEN": self.twilio.token,
            "HEXMARKET_TWILIO_FROM": "+15005550006",
            "HEXMARKET_TWILIO_BASE_URL": self.twilio.base,
        })
        self.base, self.ws = self.node.base, self.node.ws
        self.push = None
        self.finished = threading.Event()
        self.codes = {}
        self.delivered = set()
        self.orders = []  # (order id, customer index)
        self.lock = threading.Lock()

    def stop(self):
        self.finished.set()
        self.node.stop()
        for receiver in (self.mail, self.twilio.http, self.hooks, self.push):
            if receiver is not None:
                receiver.stop()

    # -- people ---------------------------------------------------------------------------

    def setup(self):
        admin_password = "kestrel-" + uuid.uuid4().hex[:16]
        printed = self.node.create_admin("admin@notifications.example.com", admin_password)
        admin_file = os.path.join(self.work, "admin.txt")
        with open(admin_file, "w") as f:
            f.write(f"admin@notifications.example.com\n{admin_password}\n{printed}")
        self.node.start()
        seed_file = os.path.join(self.work, "seed.json")
        seed(self.base, admin_file, seed_file)
        with open(seed_file) as f:
            self.seeded = json.load(f)
        users = self.seeded["users"]
        self.admin = Person(self, users["admin"], users["admin"]["totp_secret"])
        self.vendor = Person(self, users["vendor"])
        key = must([200], call(self.base, "GET", "/api/v1/push/vapid-public-key"), "VAPID key")["public_key"]
        self.push = PushService(key)

        # Webhook endpoints: the store's (a few events) and the platform's (all of them).
        self.hook_scope = {}
        for person, name, events in ((self.vendor, "store", STORE_HOOK_EVENTS), (self.admin, "platform", ADMIN_HOOK_EVENTS)):
            made = must([201], person.call("POST", "/api/v1/webhooks", {"url": self.hooks.url(name), "events": events}), f"{name} webhook")
            self.hooks.secrets[name] = made["secret"]
            self.hook_scope[name] = set(events)
        self.subscriptions = collections.defaultdict(list)  # user id -> push names
        self.subscribe(self.vendor)

        with ThreadPoolExecutor(8) as pool:
            self.customers = list(pool.map(self.customer, range(CUSTOMERS)))
            self.couriers = list(pool.map(self.courier, range(COURIERS)))
        gone = [c for c in self.customers if c.gone_push]
        say(f"{len(self.customers)} customers ({sum(c.phone is not None for c in self.customers)} with a verified phone, "
            f"{sum(bool(self.subscriptions[c.id]) for c in self.customers)} with push, {len(gone)} with a dropped browser), "
            f"{len(self.couriers)} couriers, 2 webhook endpoints")

    def subscribe(self, person, gone=False):
        name, subscription = self.push.subscribe(gone)
        must([201], person.call("POST", "/api/v1/me/push-subscriptions", subscription), "push subscription")
        if not gone:
            self.subscriptions[person.id].append(name)
        return name

    def customer(self, i):
        phone = f"+4915{i:09d}" if i % 2 == 0 else None
        if phone:
            body = {"email": f"probe-c{i}-{uuid.uuid4().hex[:10]}@example.com", "password": "probe-password-2026",
                    "name": f"Probe c{i}", "role": "customer", "phone": phone}
            account = register_with(self.base, body)
        else:
            account = register(self.base, "customer", f"c{i}")
        person = Person(self, account)
        person.phone, person.prefs, person.gone_push = None, {}, False
        if phone:
            seen = len(self.twilio.received())
            must([200, 202, 204], person.call("POST", "/api/v1/auth/phone/otp", {"purpose": "verify_phone"}), "phone code")
            code = None
            for _ in range(100):
                code = self.twilio.code_for(phone, seen)
                if code:
                    break
                time.sleep(0.05)
            must([200, 204], person.call("POST", "/api/v1/auth/phone/verify", {"purpose": "verify_phone", "code": code}), "verify phone")
            person.phone = phone
        patch = {}
        if i % 4 == 1:
            # Off: the delivered email. Mandatory, so still sent: the receipt.
            person.prefs = {("email", "order_delivered"): False, ("email", "order_paid"): False}
        elif i % 4 == 2:
            person.prefs = {("sms", "order_accepted"): True, ("push", "courier_assigned"): False}
        if person.prefs:
            patch["notifications"] = {}
            for (medium, event), on in person.prefs.items():
                patch["notifications"].setdefault(medium, {})[event] = on
        if i % 5 == 3:
            patch["locale"] = "de"
        if patch:
            must([200], person.call("PATCH", "/api/v1/me", patch), "preferences")
        if i % 3 == 0:
            self.subscribe(person)
        if i == 3:
            self.subscribe(person, gone=True)
            person.gone_push = True
        return person

    def courier(self, i):
        person = Person(self, register(self.base, "courier", f"r{i}"))
        must([200], person.call("PUT", "/api/v1/couriers/me/profile", {"vehicle": "scooter", "max_concurrent_orders": CARRY}), "courier profile")
        if i % 2 == 0:
            self.subscribe(person)
        return person

    # -- orders ---------------------------------------------------------------------------

    def order(self, n):
        """Customer n % CUSTOMERS buys one item and pays (every 25th payment fails); the store
        declines every 10th, the customer cancels every 15th before the store answers; the rest
        are accepted, prepared and made ready for the couriers."""
        ci = n % CUSTOMERS
        customer = self.customers[ci]
        must([200], customer.call("POST", "/api/v1/cart/items", {"product_id": self.seeded["product_id"], "quantity": 1}), "cart")
        key = str(uuid.uuid4())
        placed = must([201], customer.call("POST", "/api/v1/checkout", {"delivery_address": HOME, "payment_method": "simulated"},
                                           {"Idempotency-Key": key}), "checkout")
        order = placed["orders"][0]["id"]
        with self.lock:
            self.orders.append((order, ci))
        outcome = "fail" if n % 25 == 24 else "succeed"
        status, answer = customer.call("POST", f"/api/v1/payments/{placed['payment']['id']}/simulate", {"outcome": outcome})
        if status not in (200, 409):
            raise Refused(f"pay {order}: {status} {answer}")
        if outcome == "fail":
            return
        seen = must([200], customer.call("GET", f"/api/v1/orders/{order}"), "order")
        self.codes[order] = seen["handoff_code"]
        if n % 15 == 7:
            self.step(customer, order, "cancel", {}, "cancelled")
            return
        if n % 10 == 3:
            self.step(self.vendor, order, "reject", {"reason": "sold out"}, "rejected")
            return
        for step, after in (("accept", "accepted"), ("preparing", "preparing"), ("ready", "ready_for_pickup")):
            self.step(self.vendor, order, step, {}, after)

    def step(self, person, order, step, body, after):
        status, answer = person.call("POST", f"/api/v1/orders/{order}/{step}", body)
        if status == 200:
            return
        if status == 409:
            # Done before a crash took the answer, or overtaken (a courier already on it).
            status, seen = person.call("GET", f"/api/v1/orders/{order}")
            if status == 200 and seen.get("status") not in ("paid", "pending_payment"):
                return
        raise Refused(f"{step} {order}: {status} {answer}")

    def run(self):
        for courier in self.couriers:
            thread = Courier(self, courier, len(getattr(self, "threads", [])))
            self.threads = getattr(self, "threads", []) + [thread]
            thread.start()
        killed = threading.Event()

        def crash_midway():
            while len(self.delivered) < ORDERS // 3 and not self.finished.is_set():
                time.sleep(0.05)
            self.node.kill()
            self.killed_at = time.time()
            say(f"killed the node with SIGKILL after {len(self.delivered)} handovers, {len(self.orders)} orders placed")
            # Until the next process exists, whatever a receiver takes or answers came from the
            # one just killed (its last bytes still in the socket, or the receiver's thread
            # behind), and that node can no longer hear the answer.
            self.restarting_at = time.time()
            self.node.start()
            killed.set()

        crasher = threading.Thread(target=crash_midway, daemon=True)
        crasher.start()
        started = time.time()
        with ThreadPoolExecutor(6) as pool:
            for failure in pool.map(self.safe_order, range(ORDERS)):
                if failure:
                    raise Refused(failure)
        say(f"{ORDERS} orders placed and answered in {time.time() - started:.0f} s")
        deadline = time.time() + 240
        while time.time() < deadline:
            open_orders = [o for o, _ in self.orders if o in self.codes and o not in self.delivered and not self.closed(o)]
            broken = [c.failure for c in self.threads if c.failure]
            if broken:
                raise Refused(f"a courier failed: {broken[0]}")
            if not open_orders and killed.is_set():
                break
            time.sleep(1)
        else:
            states = collections.Counter(self.admin.call("GET", f"/api/v1/orders/{o}")[1].get("status") for o in open_orders)
            carried = [c.carrying for c in self.threads if c.carrying]
            raise Refused(f"{len(open_orders)} orders never delivered: {dict(states)}; couriers carry {carried}")
        say(f"every order delivered or closed in {time.time() - started:.0f} s ({len(self.delivered)} handovers)")
        self.finished.set()

    def safe_order(self, n):
        try:
            self.order(n)
            return None
        except Refused as e:
            return str(e)

    def closed(self, order):
        status, seen = self.admin.call("GET", f"/api/v1/orders/{order}")
        return status == 200 and seen["status"] in ("rejected", "cancelled", "payment_failed", "refunded", "delivered")

    # -- what was expected ----------------------------------------------------------------

    def expected(self):
        """Per channel, a Counter of what each receiver should hold, from the orders' logs."""
        owner = self.vendor
        by_id = {c.id: c for c in self.customers + self.couriers + [owner]}
        feed = collections.Counter()  # (user id, order, event)
        mail = collections.Counter()  # (address, ref)
        sms = collections.Counter()  # (phone, ref)
        push = collections.Counter()  # (browser, order, event)
        hooks = collections.Counter()  # (endpoint, order, event)
        for order, ci in self.orders:
            customer = self.customers[ci]
            log = self.admin.call("GET", f"/api/v1/orders/{order}/events?limit=100")[1]
            events = log["events"] if isinstance(log, dict) else log
            paid, courier = False, None
            for event in events:
                kind = event["kind"]["type"] if isinstance(event["kind"], dict) else event["kind"]
                if kind == "paid":
                    paid = True
                if kind == "courier_assigned":
                    courier = event["kind"]["courier"]
                notification = NOTIFIED.get(kind)
                if notification is None:
                    continue
                for name, events_wanted in self.hook_scope.items():
                    if notification in events_wanted and (name == "platform" or paid):
                        hooks[(name, order, notification)] += 1
                parties = [("customer", customer.id), ("store", owner.id if paid else None), ("courier", courier)]
                for audience, user in parties:
                    if user is None:
                        continue
                    defaults = DEFAULTS.get((notification, audience), set())
                    person = by_id[user]
                    prefs = getattr(person, "prefs", {})
                    for medium in ("in_app", "email", "sms", "push"):
                        on = medium in defaults
                        if medium != "in_app" and (medium, notification, audience) not in {(m, e, a) for e, a, m in MANDATORY}:
                            on = prefs.get((medium, notification), on)
                        if medium == "in_app" and audience in ("store", "courier") and not on:
                            continue
                        if not on:
                            continue
                        if medium == "in_app":
                            feed[(user, order, notification)] += 1
                        elif medium == "email":
                            mail[(person.email, order[:8].upper())] += 1
                        elif medium == "sms" and getattr(person, "phone", None):
                            sms[(person.phone, order[:8].upper())] += 1
                        elif medium == "push":
                            for browser in self.subscriptions[user]:
                                push[(browser, order, notification)] += 1
        return feed, mail, sms, push, hooks

    # -- what arrived ---------------------------------------------------------------------

    def arrived(self):
        """What each receiver holds, counted per message as the expectations are. A second copy
        of one message (same Message-ID, push id, webhook id, or SMS text to the same phone) is
        not counted when its first copy arrived in the last REPEAT_WINDOW_SECS before the kill, or
        between the kill and the restart:
        the provider took it as the node died, before the node could hear so (the documented
        repeat). Any other repeat counts, and fails the check."""
        excused = self.excused()
        seen = set()

        def counts(channel, message_id):
            if (channel, message_id) in seen and (channel, message_id) in excused:
                return False
            seen.add((channel, message_id))
            return True

        refs = {order[:8].upper() for order, _ in self.orders}

        def ref_in(text):
            return next((word.strip(".,:!") for word in text.split() if word.strip(".,:!") in refs), None)

        mail, parts_seen = collections.Counter(), []
        for to, subject, message_id, parts in self.mail.received():
            ref = ref_in(subject)
            if ref is not None and counts("email", message_id):  # else account mail (sign-up)
                mail[(to, ref)] += 1
                parts_seen.append(((to, ref), parts))
        sms = collections.Counter()
        for to, body in self.twilio.received():
            ref = ref_in(body)
            if ref is not None and counts("sms", (to, body)):
                sms[(to, ref)] += 1
        push = collections.Counter()
        for browser, payload in self.push.received:
            if counts("push", payload["id"]):
                push[(browser, payload["order_id"], payload["event"])] += 1
        hooks = collections.Counter()
        for name, delivery, payload in self.hooks.accepted:
            if counts("webhook", delivery):
                hooks[(name, payload["data"]["order_id"], payload["type"])] += 1
        return mail, parts_seen, sms, push, hooks

    def excused(self):
        """(channel, id) of messages whose first copy arrived just before the kill, or after it
        but before the node was started again (a receiver's thread may note a message the dying
        node sent a few milliseconds after the kill returned)."""
        first = {}
        for at, channel, message_id in sorted(ARRIVALS):
            first.setdefault((channel, message_id), at)
        since = self.killed_at - REPEAT_WINDOW_SECS
        return {key for key, at in first.items() if since <= at <= self.restarting_at}

    def feeds(self):
        feed = collections.Counter()
        for person in self.customers + self.couriers + [self.vendor]:
            cursor = None
            while True:
                path = "/api/v1/notifications?limit=100" + (f"&cursor={cursor}" if cursor else "")
                page = must([200], person.call("GET", path), "feed")
                for item in page["items"]:
                    feed[(person.id, item["order_id"], item["event"])] += 1
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        return feed

    def check(self):
        want_feed, want_mail, want_sms, want_push, want_hooks = self.expected()
        deadline = time.time() + SETTLE_SECS
        while True:
            mail, _, sms, push, hooks = self.arrived()
            short = sum(max(0, n - mail[k]) for k, n in want_mail.items()) + sum(max(0, n - sms[k]) for k, n in want_sms.items()) \
                + sum(max(0, n - push[k]) for k, n in want_push.items()) + sum(max(0, n - hooks[k]) for k, n in want_hooks.items())
            if short == 0 or time.time() > deadline:
                break
            time.sleep(1)
        time.sleep(4)  # anything sent twice would show by now
        mail, parts_seen, sms, push, hooks = self.arrived()
        feed = self.feeds()
        problems = []
        for channel, want, got in (("in-app", want_feed, feed), ("email", want_mail, mail), ("sms", want_sms, sms),
                                   ("push", want_push, push), ("webhook", want_hooks, hooks)):
            for key in sorted(set(want) | set(got)):
                if got[key] < want[key]:
                    problems.append(f"{channel}: missing {want[key] - got[key]} of {key}")
                elif got[key] > want[key]:
                    problems.append(f"{channel}: {got[key]} instead of {want[key]} of {key}")
        for key, parts in parts_seen:
            if parts != ("text/html", "text/plain"):
                problems.append(f"email to {key} has parts {parts}, not HTML and text")
        problems += [f"push refused: {why}" for _, why in self.push.refused[:5]]
        problems += [f"webhook refused: {why}" for _, why in self.hooks.refused[:5]]
        gone = [c for c in self.customers if c.gone_push]
        for customer in gone:
            listed = must([200], customer.call("GET", "/api/v1/me/push-subscriptions"), "subscriptions")
            endpoints = [s["endpoint"] for s in (listed["items"] if isinstance(listed, dict) else listed)]
            if any("/push/gone-" in e for e in endpoints):
                problems.append("a subscription whose push service answered 410 is still listed")
        totals = {name: sum(c.values()) for name, c in (("in-app", want_feed), ("email", want_mail), ("sms", want_sms),
                                                       ("push", want_push), ("webhook", want_hooks))}
        self.repeats()
        with open(self.node.log, errors="replace") as f:
            recovered = sum("recorded as sent, not sent again" in line for line in f)
        say(f"after the restart, {recovered} message(s) a provider had taken before the kill were recorded as sent, not sent again")
        if problems:
            for p in problems[:60]:
                say(p)
            raise Refused(f"{len(problems)} problem(s); expected {totals}")
        say(f"every expected message arrived once across one SIGKILL: {totals}")


    def repeats(self):
        """Messages a receiver took twice, by channel, with when the first copy arrived relative
        to the kill."""
        first, twice = {}, collections.defaultdict(list)
        for at, channel, message_id in sorted(ARRIVALS):
            if (channel, message_id) in first:
                twice[channel].append(first[(channel, message_id)] - self.killed_at)
                with open(os.path.join(self.work, "repeated.txt"), "a") as f:
                    f.write(f"{channel} {message_id}\n")
            else:
                first[(channel, message_id)] = at
        if twice:
            say("repeated across the crash, as the same message: " + "; ".join(
                f"{channel} {len(offsets)} (first copies {min(offsets) * 1000:+.0f} to {max(offsets) * 1000:+.0f} ms from the kill)"
                for channel, offsets in sorted(twice.items())))


def register_with(base, body):
    account = must([201], call(base, "POST", "/api/v1/auth/register", body), "register with phone")
    return {"email": body["email"], "password": body["password"], "id": account["id"]}


def main(binary, work):
    random.seed(7)
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
        sys.exit(f"notifications: {e}")
