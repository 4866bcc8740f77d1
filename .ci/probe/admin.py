#!/usr/bin/env python3
"""Running the platform from outside: live settings, the audit trail, support, moderation and
analytics, across roles and across crashes.

    admin.py HEXMARKET_BIN WORK_DIR

Starts a hexmarket node of its own (its own data directory), creates the administrator with the
CLI (`create-admin`, whose authenticator secret it reads from the output) and signs everyone
else up through the API. Then, through the public API only, as the README describes it:

  - settings: the administrator reads the settings the environment gave (version 1), is
    refused with 422 naming the field for a value out of range and 403 without the role,
    changes the delivery fee table and sees the next checkout charge it; changes the offer
    timeout and the node is SIGKILLed the moment the 200 arrives: started again, the change is
    there, and so is its audit entry;
  - audit: the administrator bans a customer (whose next request is refused at once), lifts
    the ban and makes a customer a vendor; the trail answers each action with who, what, when,
    from where, before and after, filtered by object, action and administrator, paged to the
    end; the CLI's admin creation is in it; no method but GET reaches it;
  - support: a customer opens a ticket about their order (not about someone else's: 422),
    attaches a photo and writes; another customer and the store's owner get 404; the admin
    finds it in the queue (overdue once it has waited past `support_overdue_secs`, set to a
    minute), assigns it, leaves an internal note and replies; the node is SIGKILLed as soon as
    the reply is acknowledged; the customer sees the reply (not the note), is told of it in the
    feed, and the ticket's first response and resolution times are recorded;
  - moderation: two customers report a product and a store (a second report of one user is
    409); the admin's queue counts them by reason; hiding the product takes it from the public
    (404, out of search) but not from its owner, who is told why; restoring brings it back;
    suspending the store stops its sales (422 at the cart) until it is reinstated; the history
    lists every decision and the trail every action;
  - analytics: a known history (orders paid at two stores, one rejected by its store, one
    cancelled by its customer, one refunded by the admin, some accepted and made ready) and
    every figure of the store's, the platform's and the seed paths' reports compared with what
    the orders' own records and logs make it; top products and stores; CSV; ranges refused;
    another store's owner and a courier refused; then the node is stopped, `hexmarket
    rebuild-analytics --check` rebuilds the rollups from the event logs and must find them
    identical, and after a rebuild the reports answer the same numbers.

Exits non-zero naming every check that failed."""

import json
import os
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from notifications import Node, Person, patient  # noqa: E402
from seed import STORE, Refused, call, must, otpauth_secret, register  # noqa: E402

HOME = {"text": "Probe Allee 7, Berlin", "lat": STORE["lat"] + 0.009, "lng": STORE["lng"]}


def png(width=8, height=8):
    """A small valid PNG (RGB, a gradient), made here."""
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 30 % 256, y * 30 % 256, 128)) for x in range(width)) for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def upload(base, path, token, data, content_type="image/png"):
    """A multipart upload of one `image` part; (status, JSON answer)."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"photo.png\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(base + path, data=body, method="POST")
    request.add_header("content-type", f"multipart/form-data; boundary={boundary}")
    request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def fetch(base, path, token):
    """A GET whose answer may not be JSON (an image, CSV): (status, content type, body)."""
    request = urllib.request.Request(base + path)
    request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def say(text):
    print(f"admin: {text}", file=sys.stderr, flush=True)


class Probe:
    def __init__(self, binary, work):
        self.work = work
        self.node = Node(
            binary,
            os.path.join(work, "data"),
            os.path.join(work, "server.log"),
            {"HEXMARKET_LOG": "warn", "HEXMARKET_NOTIFICATIONS": "true", "HEXMARKET_LEDGER": "true",
             "HEXMARKET_ANALYTICS": "true"},
        )
        self.base = self.node.base
        self.failures = []

    def check(self, ok, what):
        if not ok:
            self.failures.append(what)
            say(f"FAILED: {what}")

    # --- people -------------------------------------------------------------------------

    def set_up(self):
        admin_email = f"ops-{uuid.uuid4().hex[:8]}@probe.example.com"
        admin_password = f"ops-passphrase-{uuid.uuid4().hex[:8]}"
        printed = self.node.create_admin(admin_email, admin_password)
        self.node.start()
        self.admin = Person(self, {"email": admin_email, "password": admin_password}, otpauth_secret(printed))
        self.admin.id = must([200], self.admin.call("GET", "/api/v1/me"), "admin profile")["id"]
        self.customer = Person(self, register(self.base, "customer", "customer"))
        self.other = Person(self, register(self.base, "customer", "other"))
        self.courier = Person(self, register(self.base, "courier", "courier"))
        self.owner = Person(self, register(self.base, "vendor", "owner"))
        self.rival = Person(self, register(self.base, "vendor", "rival"))
        self.category = must([201], self.admin.call("POST", "/api/v1/admin/categories", {"name": f"Ops {uuid.uuid4().hex[:6]}"}), "category")["id"]
        self.store = self.open_store(self.owner, "Ops Kitchen", STORE)
        self.rival_store = self.open_store(self.rival, "Rival Grill", {"lat": STORE["lat"] + 0.002, "lng": STORE["lng"]})
        self.product = self.list_product(self.owner, "Ops soup", 900)
        self.rival_product = self.list_product(self.rival, "Rival burger", 1100)

    def open_store(self, owner, name, location):
        body = {"name": name, "pickup_address": "Probe Strasse 1, Berlin", "location": location, "delivery_radius_km": 8}
        return must([201], owner.call("POST", "/api/v1/vendors", body), f"store {name}")["id"]

    def list_product(self, owner, title, cents):
        body = {"title": title, "description": "listed by the operations probe", "category_id": self.category,
                "price": {"amount_minor": cents, "currency": "EUR"}, "visibility": "published"}
        product = must([201], owner.call("POST", "/api/v1/products", body), f"product {title}")["id"]
        must([200], owner.call("PUT", f"/api/v1/products/{product}/inventory", {"stock": 10000, "reason": "probe"}), "stock")
        return product

    def buy(self, customer, product, quantity=1, pay=True):
        """A checkout of one product (paid unless told otherwise): the order as placed."""
        must([200], customer.call("POST", "/api/v1/cart/items", {"product_id": product, "quantity": quantity}), "cart")
        body = {"delivery_address": HOME, "payment_method": "simulated"}
        placed = must([201], customer.call("POST", "/api/v1/checkout", body, {"Idempotency-Key": str(uuid.uuid4())}), "checkout")
        order = placed["orders"][0]
        if pay:
            must([200], customer.call("POST", f"/api/v1/payments/{placed['payment']['id']}/simulate", {"outcome": "succeed"}), "pay")
            for _ in range(100):
                if must([200], customer.call("GET", f"/api/v1/orders/{order['id']}"), "order")["status"] == "paid":
                    break
                time.sleep(0.1)
        return order

    def restart_after_kill(self):
        self.node.kill()
        self.node.start()

    # --- settings -----------------------------------------------------------------------

    def settings(self):
        first = must([200], self.admin.call("GET", "/api/v1/admin/settings"), "settings")
        self.check(first["version"] == 1, f"a fresh platform's settings are version 1: {first}")
        self.check(first["settings"]["delivery_fees"]["base_cents"] == 199, "the default fee table")
        status, refused = self.admin.call("PATCH", "/api/v1/admin/settings", {"commission_bps": 20000})
        fields = [e.get("field") for e in refused.get("errors", [])] if isinstance(refused, dict) else []
        self.check(status == 422 and fields == ["commission_bps"], f"an out-of-range commission: {status} {refused}")
        status, refused = self.admin.call("PATCH", "/api/v1/admin/settings", {"dispatch_radius_km": "far"})
        self.check(status in (400, 422), f"a radius that is not a number: {status} {refused}")
        status, refused = self.owner.call("PATCH", "/api/v1/admin/settings", {"commission_bps": 100})
        self.check(status == 403, f"a store owner changing settings: {status} {refused}")
        unchanged = must([200], self.admin.call("GET", "/api/v1/admin/settings"), "settings")
        self.check(unchanged["version"] == 1, "refused changes change nothing")

        fees = {"base_cents": 350, "included_m": 3000, "per_km_cents": 40, "cap_cents": 900}
        changed = must([200], self.admin.call("PATCH", "/api/v1/admin/settings", {"delivery_fees": fees, "version": 1}), "fee table")
        self.check(changed["version"] == 2 and changed["changed_by"] == self.admin.id, f"the change: {changed}")
        order = self.buy(self.customer, self.product)
        # The drop-off is about 1 km from the store: inside the 3 km the base fee covers.
        self.check(order["totals"]["delivery_fee"]["amount_minor"] == 350, f"the next checkout's fee: {order['totals']}")

        # SIGKILL as soon as the change is acknowledged.
        changed = must([200], self.admin.call("PATCH", "/api/v1/admin/settings", {"offer_timeout_secs": 45}), "offer timeout")
        self.restart_after_kill()
        seen = must([200], self.admin.call("GET", "/api/v1/admin/settings"), "settings after the kill")
        self.check(seen["version"] == changed["version"] and seen["settings"]["offer_timeout_secs"] == 45,
                   f"an acknowledged change survives SIGKILL: {seen}")
        history = must([200], self.admin.call("GET", "/api/v1/admin/settings/history?limit=10"), "history")
        self.check([v["version"] for v in history["versions"]] == [3, 2, 1], f"the history: {history}")
        trail = must([200], self.admin.call("GET", "/api/v1/admin/audit?action=settings.change"), "audit")
        self.check(len(trail["entries"]) == 2, f"both changes are in the trail after the kill: {trail}")
        newest = trail["entries"][0] if trail["entries"] else {}
        self.check(newest.get("before", {}).get("settings", {}).get("offer_timeout_secs") == 20
                   and newest.get("after", {}).get("settings", {}).get("offer_timeout_secs") == 45,
                   f"the entry's before and after: {newest}")
        say("settings: checked, versioned, in force at checkout, kept across SIGKILL")

    # --- audit --------------------------------------------------------------------------

    def audit(self):
        target = f"user:{self.other.id}"
        path = f"/api/v1/admin/users/{self.other.id}"
        must([200], self.other.call("GET", "/api/v1/me"), "the customer before the ban")
        must([200], self.admin.call("PATCH", path, {"banned": True}), "ban")
        status, _ = call(self.base, "GET", "/api/v1/me", token=self.other.token)
        self.check(status in (401, 403), f"a banned customer's token is refused at once: {status}")
        must([200], self.admin.call("PATCH", path, {"banned": False}), "lift the ban")
        must([200], self.admin.call("PATCH", path, {"role": "vendor"}), "make a vendor")
        trail = must([200], self.admin.call("GET", f"/api/v1/admin/audit?target={target}"), "audit by object")
        actions = [e["action"] for e in trail["entries"]]
        self.check(actions == ["user.role", "user.unban", "user.ban"], f"the user's actions, newest first: {actions}")
        for entry in trail["entries"]:
            self.check(entry["actor"] == self.admin.id and entry["channel"] == "api" and entry["from"] == "127.0.0.1"
                       and entry.get("at"), f"who, how, from where and when: {entry}")
        ban = trail["entries"][-1] if trail["entries"] else {}
        self.check(ban.get("before") == {"role": "customer", "banned": False}
                   and ban.get("after") == {"role": "customer", "banned": True}, f"the ban's before and after: {ban}")
        by_admin = must([200], self.admin.call("GET", f"/api/v1/admin/audit?actor={self.admin.id}&limit=100"), "audit by admin")
        self.check(all(e["actor"] == self.admin.id for e in by_admin["entries"]), "the actor filter")
        cli = must([200], self.admin.call("GET", "/api/v1/admin/audit?action=user.create_admin"), "audit of the CLI")
        self.check(any(e["channel"] == "cli" and e["actor"] is None and e["target"] == f"user:{self.admin.id}"
                       for e in cli["entries"]), f"the CLI's admin creation: {cli}")
        # Pages of two, to the end: every entry once.
        seen, cursor = [], None
        for _ in range(100):
            query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = must([200], self.admin.call("GET", "/api/v1/admin/audit" + query), "audit page")
            seen += [e["id"] for e in page["entries"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        everything = must([200], self.admin.call("GET", "/api/v1/admin/audit?limit=100"), "audit")
        self.check(seen == [e["id"] for e in everything["entries"]] and len(set(seen)) == len(seen),
                   "paging gives every entry once, in order")
        for method in ("DELETE", "PUT", "POST", "PATCH"):
            status, _ = self.admin.call(method, "/api/v1/admin/audit", {})
            self.check(status == 405, f"{method} on the trail: {status}")
        status, _ = self.customer.call("GET", "/api/v1/admin/audit")
        self.check(status == 403, f"a customer reading the trail: {status}")
        status, answer = self.admin.call("GET", "/api/v1/admin/audit?cursor=forged")
        self.check(status == 400 and answer.get("code") == "invalid_cursor", f"a forged cursor: {status} {answer}")
        say(f"audit: {len(everything['entries'])} entries read back, filtered and paged")

    # --- support ----------------------------------------------------------------------

    def open_ticket(self):
        """Opened early: it must wait past the overdue threshold (a minute) before `support`."""
        must([200], self.admin.call("PATCH", "/api/v1/admin/settings", {"support_overdue_secs": 60}), "overdue after a minute")
        self.bought = self.buy(self.customer, self.product)
        body = {"subject": "Soup arrived cold", "category": "order_problem", "order_id": self.bought["id"],
                "body": "It was cold and the lid was loose."}
        self.ticket = must([201], self.customer.call("POST", "/api/v1/support/tickets", body), "open a ticket")
        self.ticket_opened = time.time()
        status, refused = self.other.call("POST", "/api/v1/support/tickets", body)
        self.check(status == 422 and refused.get("code") == "not_your_order", f"a ticket about another's order: {status} {refused}")
        status, refused = self.customer.call("POST", "/api/v1/support/tickets", {**body, "category": "weather"})
        self.check(status in (400, 422), f"an unknown category: {status} {refused}")

    def support(self):
        ticket = self.ticket["id"]
        path = f"/api/v1/support/tickets/{ticket}"
        status, photo = upload(self.base, f"{path}/attachments", self.customer.token or self.customer.fresh_token(), png())
        self.check(status == 201, f"a photo on the ticket: {status} {photo}")
        status, refused = upload(self.base, f"{path}/attachments", self.customer.token, b"not an image at all")
        self.check(status in (415, 422), f"an upload that is no image: {status} {refused}")
        attachments = [photo["id"]] if status == 201 or photo else []
        must([201, 200], self.customer.call("POST", f"{path}/messages", {"body": "Photo attached.", "attachments": attachments}), "a message")
        for stranger, who in ((self.other, "another customer"), (self.owner, "the store's owner")):
            status, _ = stranger.call("GET", path)
            self.check(status == 404, f"{who} reading the ticket: {status}")
            if photo:
                status, _, _ = fetch(self.base, f"{path}/attachments/{photo['id']}", stranger.token or stranger.fresh_token())
                self.check(status == 404, f"{who} reading the photo: {status}")
        status, _ = self.owner.call("GET", "/api/v1/admin/support/tickets")
        self.check(status == 403, f"a store owner reading the queue: {status}")

        # Overdue once it has waited a minute on the admins.
        time.sleep(max(0.0, self.ticket_opened + 62 - time.time()))
        overdue = must([200], self.admin.call("GET", "/api/v1/admin/support/tickets?overdue=true&limit=100"), "overdue queue")
        self.check(any(t["id"] == ticket for t in overdue["tickets"]), f"the ticket is overdue: {overdue}")
        queue = must([200], self.admin.call("GET", "/api/v1/admin/support/tickets?status=open&category=order_problem&limit=100"), "queue")
        self.check(any(t["id"] == ticket for t in queue["tickets"]), "the ticket is in the open queue")

        must([200], self.admin.call("PATCH", f"/api/v1/admin/support/tickets/{ticket}", {"assigned_to": self.admin.id}), "assign")
        must([200, 201], self.admin.call("POST", f"/api/v1/admin/support/tickets/{ticket}/messages",
                                         {"body": "Customer seems honest; refund likely.", "internal": True}), "internal note")
        must([200, 201], self.admin.call("POST", f"/api/v1/admin/support/tickets/{ticket}/messages",
                                         {"body": "Sorry! A refund is on its way."}), "reply")
        self.restart_after_kill()
        seen = must([200], self.customer.call("GET", path), "the ticket after the kill")
        bodies = [m["body"] for m in seen["messages"]]
        self.check("Sorry! A refund is on its way." in bodies, f"the acknowledged reply survives SIGKILL: {bodies}")
        self.check(all(not m["internal"] for m in seen["messages"]) and not any("honest" in b for b in bodies),
                   f"the internal note is never shown to the author: {bodies}")
        self.check(seen["status"] == "waiting_on_user" and isinstance(seen["first_response_secs"], int)
                   and seen["first_response_secs"] >= 60, f"first response recorded: {seen['status']} {seen['first_response_secs']}")
        self.check("assigned_to" not in seen, "who it is assigned to is the admins' business")
        if photo:
            status, kind, _ = fetch(self.base, f"{path}/attachments/{photo['id']}", self.customer.fresh_token())
            self.check(status == 200 and kind.startswith("image/"), f"the author reads their photo: {status} {kind}")
        feed = must([200], self.customer.call("GET", "/api/v1/notifications?limit=100"), "feed")
        told = [i for i in feed["items"] if i.get("subject") == f"ticket:{ticket}"]
        self.check(any(i.get("notice") == "support_reply" for i in told), f"the customer is told of the reply: {told}")
        self.check(len([i for i in told if i.get("notice") == "support_reply"]) == 1, "told once, not once per note")

        must([200], self.admin.call("PATCH", f"/api/v1/admin/support/tickets/{ticket}", {"status": "resolved"}), "resolve")
        seen = must([200], self.customer.call("GET", path), "the resolved ticket")
        self.check(seen["status"] == "resolved" and isinstance(seen["resolution_secs"], int), f"resolution recorded: {seen}")
        mine = must([200], self.customer.call("GET", "/api/v1/support/tickets"), "my tickets")
        self.check([t["id"] for t in mine["tickets"]] == [ticket], f"the author's list: {mine}")
        trail = must([200], self.admin.call("GET", "/api/v1/admin/audit?action=support&limit=100"), "support in the trail")
        actions = sorted(e["action"] for e in trail["entries"])
        self.check({"support.assign", "support.note", "support.reply", "support.status"} <= set(actions), f"support actions audited: {actions}")
        self.check(all("refund is on its way" not in json.dumps(e) for e in trail["entries"]), "the trail keeps no message text")
        say(f"support: ticket answered in {seen['first_response_secs']} s, resolved in {seen['resolution_secs']} s")

    # --- moderation ---------------------------------------------------------------------

    def moderation(self):
        product, store = self.rival_product, self.rival_store
        for person in (self.customer, self.courier):
            must([204, 201, 200], person.call("POST", f"/api/v1/products/{product}/reports", {"reason": "counterfeit", "text": "fake logo"}), "report a product")
        status, answer = self.customer.call("POST", f"/api/v1/products/{product}/reports", {"reason": "counterfeit"})
        self.check(status == 409 and answer.get("code") == "already_reported", f"a second report: {status} {answer}")
        status, answer = self.customer.call("POST", f"/api/v1/products/{product}/reports", {"reason": "because"})
        self.check(status in (400, 422), f"an unknown reason: {status} {answer}")
        must([204, 201, 200], self.customer.call("POST", f"/api/v1/vendors/{store}/reports", {"reason": "fraud"}), "report a store")
        status, _ = self.customer.call("GET", "/api/v1/admin/moderation/queue")
        self.check(status == 403, f"a customer reading the moderation queue: {status}")
        queue = must([200], self.admin.call("GET", "/api/v1/admin/moderation/queue?limit=100"), "moderation queue")
        entry = next((i for i in queue["items"] if i["id"] == product), None)
        self.check(entry is not None and entry["reports"] == 2 and entry["reasons"] == {"counterfeit": 2}, f"the product's reports: {entry}")
        self.check(any(i["id"] == store and i["kind"] == "vendor" for i in queue["items"]), "the store is in the same queue")

        reason = "Counterfeit goods, reported twice."
        must([200], self.admin.call("POST", f"/api/v1/admin/moderation/products/{product}/hide", {"reason": reason}), "hide")
        status, _ = call(self.base, "GET", f"/api/v1/products/{product}")
        self.check(status == 404, f"the public reading a hidden product: {status}")
        found = must([200], call(self.base, "GET", "/api/v1/products?q=Rival"), "search")
        self.check(all(p["id"] != product for p in found.get("items", found.get("products", []))), "a hidden product is out of search")
        seen = must([200], self.rival.call("GET", f"/api/v1/products/{product}"), "the owner's view")
        self.check(seen.get("hidden") is True, f"its owner still sees it, hidden: {seen}")
        feed = must([200], self.rival.call("GET", "/api/v1/notifications?limit=100"), "owner's feed")
        notices = [i for i in feed["items"] if i.get("notice") == "product_hidden"]
        self.check(len(notices) == 1 and reason in json.dumps(notices[0]), f"the owner is told why: {notices}")
        status, answer = self.admin.call("POST", f"/api/v1/admin/moderation/products/{product}/hide", {"reason": reason})
        self.check(status == 409, f"hiding a hidden product: {status} {answer}")
        must([200], self.admin.call("POST", f"/api/v1/admin/moderation/products/{product}/restore", {"reason": "Seller proved it genuine."}), "restore")
        status, _ = call(self.base, "GET", f"/api/v1/products/{product}")
        self.check(status == 200, f"a restored product is public again: {status}")

        must([200], self.admin.call("POST", f"/api/v1/admin/moderation/vendors/{store}/suspend", {"reason": "Fraud reports."}), "suspend")
        status, answer = self.customer.call("POST", "/api/v1/cart/items", {"product_id": product, "quantity": 1})
        self.check(status == 422 and answer.get("code") == "product_unavailable", f"a suspended store's product in a cart: {status} {answer}")
        status, _ = call(self.base, "GET", f"/api/v1/vendors/{store}")
        self.check(status == 404, f"the public reading a suspended store: {status}")
        must([200], self.admin.call("POST", f"/api/v1/admin/moderation/vendors/{store}/reinstate", {"reason": "Cleared."}), "reinstate")
        must([200], self.customer.call("POST", "/api/v1/cart/items", {"product_id": product, "quantity": 1}), "a reinstated store sells")
        must([200, 204], self.customer.call("DELETE", f"/api/v1/cart/items/{product}"), "empty the cart again")

        history = must([200], self.admin.call("GET", "/api/v1/admin/moderation/decisions?limit=100"), "decisions")
        actions = [d.get("action") for d in history["decisions"]]
        self.check(actions[:4] == ["reinstate", "suspend", "restore", "hide"], f"the history, newest first: {actions}")
        trail = must([200], self.admin.call("GET", f"/api/v1/admin/audit?target=product:{product}"), "the product's trail")
        self.check([e["action"] for e in trail["entries"]] == ["product.restore", "product.hide"]
                   and trail["entries"][1].get("reason") == reason, f"moderation in the trail: {trail}")
        say("moderation: reported, hidden, restored, suspended and reinstated, all on the record")

    # --- analytics ----------------------------------------------------------------------

    def order_facts(self, order):
        row = must([200], self.customer.call("GET", f"/api/v1/orders/{order}"), "order")
        log = must([200], self.customer.call("GET", f"/api/v1/orders/{order}/events?limit=100"), "order log")
        kinds = {}
        refunds = []
        for event in log["events"]:
            kind = event["kind"]["type"]
            kinds.setdefault(kind, event["at"])
            if kind == "refunded":
                refunds.append(event["kind"]["amount"]["amount_minor"])
        return {"store": row["vendor_id"], "subtotal": row["totals"]["subtotal"]["amount_minor"],
                "fee": row["totals"]["delivery_fee"]["amount_minor"], "rates": row["rates"], "kinds": kinds,
                "refunds": refunds, "lines": row["lines"]}

    @staticmethod
    def expected(orders):
        """The totals the README's definitions give for these orders (whole refunds only)."""
        half_up = lambda x, bps: (x * bps + 5000) // 10000  # noqa: E731
        paid = [o for o in orders if "paid" in o["kinds"]]
        goods = sum(o["subtotal"] for o in paid)
        fees = sum(o["fee"] for o in paid)
        refunds = sum(sum(o["refunds"]) for o in orders)
        commission = kept = share = 0
        for o in paid:
            if o["refunds"]:
                continue  # a whole refund gives every share back
            c = half_up(o["subtotal"], o["rates"]["commission_bps"])
            commission += c
            kept += o["fee"] - half_up(o["fee"], o["rates"]["courier_fee_bps"])
            share += o["subtotal"] - c
        count = lambda kind: sum(1 for o in orders if kind in o["kinds"])  # noqa: E731
        rate = lambda n: round(n / len(paid), 4)  # noqa: E731
        return {"currency": "EUR", "orders": len(paid), "gross_sales": goods, "discounts": 0, "delivery_fees": fees,
                "gmv": goods + fees, "refunds": refunds, "refund_count": sum(len(o["refunds"]) for o in orders),
                "net_sales": goods + fees - refunds, "average_order_value": (goods + fees) // len(paid),
                "commission": commission, "delivery_fees_kept": kept, "revenue": commission + kept,
                "store_share": share, "rejected": count("rejected"), "cancelled": count("cancelled"),
                "rejection_rate": rate(count("rejected")), "cancellation_rate": rate(count("cancelled"))}

    def analytics(self):
        # The history: three more paid orders at the owner's store (one rejected, one cancelled
        # by the customer, one accepted and made ready), two units at the rival's (one order,
        # refunded whole by the admin).
        rejected = self.buy(self.customer, self.product)["id"]
        must([200], self.owner.call("POST", f"/api/v1/orders/{rejected}/reject", {"reason": "out of soup"}), "reject")
        cancelled = self.buy(self.customer, self.product)["id"]
        must([200], self.customer.call("POST", f"/api/v1/orders/{cancelled}/cancel"), "cancel")
        prepared = self.buy(self.customer, self.product, quantity=2)["id"]
        for step in ("accept", "preparing", "ready"):
            must([200], self.owner.call("POST", f"/api/v1/orders/{prepared}/{step}"), step)
        refunded = self.buy(self.customer, self.rival_product, quantity=2)["id"]
        must([200], self.admin.call("POST", f"/api/v1/admin/orders/{refunded}/refund", {}, {"Idempotency-Key": str(uuid.uuid4())}), "refund")
        # Every order of the customer's, which includes the earlier ones of this probe.
        orders, cursor = [], None
        while True:
            page = must([200], self.customer.call("GET", "/api/v1/orders?limit=100" + (f"&cursor={cursor}" if cursor else "")), "orders")
            orders += [o["id"] for o in page["items"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        facts = [self.order_facts(o) for o in orders]
        mine = [f for f in facts if f["store"] == self.store]
        today = time.strftime("%Y-%m-%d", time.gmtime())
        yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
        tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
        span = f"from={yesterday}&to={tomorrow}"

        def totals(person, path):
            answer = must([200], person.call("GET", f"{path}?{span}&granularity=day"), path)
            return {k: v for k, v in (answer["totals"][0] if answer["totals"] else {}).items() if k in self.expected(mine)}

        store_path = f"/api/v1/analytics/stores/{self.store}/sales"
        want_store, want_all = self.expected(mine), self.expected(facts)
        deadline = time.time() + 60
        while True:
            got_store = totals(self.owner, store_path)
            got_all = totals(self.admin, "/api/v1/analytics/platform/sales")
            if (got_store, got_all) == (want_store, want_all) or time.time() > deadline:
                break
            time.sleep(1)
        self.check(got_store == want_store, f"the store's sales: {got_store} != {want_store}")
        self.check(got_all == want_all, f"the platform's sales: {got_all} != {want_all}")
        # The seed's paths answer the caller's own scope: the owner's store, the admin's platform.
        self.check(totals(self.owner, "/api/v1/analytics/sales") == want_store, "GET /analytics/sales as the owner")
        self.check(totals(self.admin, "/api/v1/analytics/sales") == want_all, "GET /analytics/sales as an admin")
        revenue = must([200], self.admin.call("GET", f"/api/v1/analytics/revenue?{span}"), "revenue")
        self.check(json.dumps(want_all["revenue"]) in json.dumps(revenue), f"the platform's revenue {want_all['revenue']}: {revenue}")

        units = {}
        for f in mine:
            if "paid" in f["kinds"]:
                for line in f["lines"]:
                    units[line["product_id"]] = units.get(line["product_id"], 0) + line["quantity"]
        top = must([200], self.owner.call("GET", f"/api/v1/analytics/stores/{self.store}/products/top-selling?{span}"), "top products")
        self.check(sorted((i["product_id"], i["units"]) for i in top["items"]) == sorted(units.items()),
                   f"the store's top products: {top['items']} != {units}")
        stores = must([200], self.admin.call("GET", f"/api/v1/analytics/platform/stores/top-selling?{span}"), "top stores")
        self.check([i["store_id"] for i in stores["items"]][:2] == [self.store, self.rival_store]
                   or [i["store_id"] for i in stores["items"]][:2] == [self.rival_store, self.store],
                   f"both stores ranked: {stores}")

        status, kind, text = fetch(self.base, f"{store_path}?{span}&format=csv", self.owner.fresh_token())
        self.check(status == 200 and kind.startswith("text/csv") and text.startswith(b"period,currency,orders"),
                   f"CSV: {status} {kind} {text[:80]}")
        for bad in (f"from={tomorrow}&to={yesterday}", "from=2020-01-01&to=2026-01-01", "granularity=hour", "from=yesterday"):
            status, answer = self.owner.call("GET", f"{store_path}?{bad}")
            self.check(status in (400, 422), f"a bad range {bad}: {status} {answer}")
        status, _ = self.rival.call("GET", store_path)
        self.check(status == 404, f"another store's owner reading its sales: {status}")
        status, _ = self.courier.call("GET", store_path)
        self.check(status in (403, 404), f"a courier reading a store's sales: {status}")
        status, _ = self.customer.call("GET", "/api/v1/analytics/platform/sales")
        self.check(status == 403, f"a customer reading the platform's sales: {status}")
        courier_id = must([200], self.courier.call("GET", "/api/v1/me"), "courier")["id"]
        must([200], self.courier.call("GET", f"/api/v1/analytics/couriers/{courier_id}?{span}"), "a courier's own report")
        status, _ = self.courier.call("GET", f"/api/v1/analytics/couriers/{self.admin.id}?{span}")
        self.check(status in (403, 404), f"a courier reading another's report: {status}")
        must([200], self.admin.call("GET", f"/api/v1/analytics/supply-demand?resolution=8"), "supply and demand")

        # Rebuilt from the event logs, the rollups are the same.
        self.node.stop()
        check = subprocess.run([self.node.binary, "rebuild-analytics", "--check"], env=self.node.env,
                               capture_output=True, text=True, timeout=300)
        self.check(check.returncode == 0, f"rebuild-analytics --check: {check.returncode} {check.stdout[-400:]} {check.stderr[-400:]}")
        rebuilt = subprocess.run([self.node.binary, "rebuild-analytics"], env=self.node.env,
                                 capture_output=True, text=True, timeout=300)
        self.check(rebuilt.returncode == 0, f"rebuild-analytics: {rebuilt.returncode} {rebuilt.stderr[-400:]}")
        self.node.start()
        self.check(totals(self.owner, store_path) == want_store, "the store's sales after the rebuild")
        self.check(totals(self.admin, "/api/v1/analytics/platform/sales") == want_all, "the platform's sales after the rebuild")
        say(f"analytics: {len(facts)} orders, every figure as their logs make it, rebuilt identically")

    def run(self):
        try:
            self.set_up()
            self.settings()
            self.open_ticket()
            self.audit()
            self.moderation()
            self.support()
            self.analytics()
        finally:
            self.node.stop()
        if self.failures:
            for failure in self.failures:
                print(f"admin: {failure}", file=sys.stderr)
            sys.exit(f"admin: {len(self.failures)} checks failed")
        say("every check passed")


def main(binary, work):
    Probe(binary, work).run()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Refused as e:
        sys.exit(f"admin: {e}")
