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
  - support, moderation and analytics: see their sections below.

Exits non-zero naming every check that failed."""

import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from notifications import Node, Person, patient  # noqa: E402
from seed import STORE, Refused, call, must, otpauth_secret, register  # noqa: E402

HOME = {"text": "Probe Allee 7, Berlin", "lat": STORE["lat"] + 0.009, "lng": STORE["lng"]}


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

    def run(self):
        try:
            self.set_up()
            self.settings()
            self.audit()
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
