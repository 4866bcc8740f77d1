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
  - analytics: see its section below.

Exits non-zero naming every check that failed."""

import json
import os
import struct
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
    """A GET whose answer may not be JSON (an image): (status, content type)."""
    request = urllib.request.Request(base + path)
    request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status, response.headers.get("content-type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", "")


def say(text):
    print(f"admin: {text}", file=sys.stderr, flush=True)


class Probe:
    def __init__(self, binary, work):
        self.work = work
        self.node = Node(
            binary,
            os.path.join(work, "data"),
            os.path.join(work, "server.log"),
            {"HEXMARKET_LOG": "warn", "HEXMARKET_NOTIFICATIONS": "true", "HEXMARKET_LEDGER": "true"},
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
                status, _ = fetch(self.base, f"{path}/attachments/{photo['id']}", stranger.token or stranger.fresh_token())
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
            status, kind = fetch(self.base, f"{path}/attachments/{photo['id']}", self.customer.fresh_token())
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

    def run(self):
        try:
            self.set_up()
            self.settings()
            self.open_ticket()
            self.audit()
            self.moderation()
            self.support()
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
