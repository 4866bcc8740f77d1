#!/usr/bin/env python3
"""Order notifications from outside, across a crash.

    notifications.py HEXMARKET_BIN WORK_DIR

Starts an SMTP sink (aiosmtpd) and a hexmarket node sending email to it, creates an admin with
the CLI, seeds a store through the API (seed.py), then 30 customers each buy one item and pay;
the store accepts two orders in three and declines the third. Halfway through the store's
answers the node is killed with SIGKILL and started again on the same data directory. Then,
from the public API and the sink alone, it checks that every message the README promises
arrived:

  - each customer: the payment receipt; for a declined order the "declined" email and the
    refund receipt; in-app: paid, and accepted or declined, once each;
  - the store's owner: "New order" for every order, "Refund on order" for each declined one.

A message may arrive twice only when the node died after the mail server took it and before
it recorded that: then the repeat carries the same Message-ID. Exits non-zero, naming every
missing message and every repeat that is not such a one."""

import collections
import email
import email.header
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from seed import Refused, call, login, must, register, seed  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402

ORDERS = 30
WAIT_SECS = 90


class Sink:
    """Every message accepted, as (recipient, subject, Message-ID)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        subject = str(email.header.make_header(email.header.decode_header(message["Subject"] or "")))
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                self.messages.append((rcpt.lower(), subject, message["Message-ID"]))
        return "250 OK"

    def received(self):
        with self.lock:
            return list(self.messages)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Node:
    def __init__(self, binary, data, port, smtp_port, log):
        self.binary, self.data, self.port, self.log = binary, data, port, log
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HEXMARKET_DATA_DIR": data,
            "HEXMARKET_LISTEN": f"127.0.0.1:{port}",
            "HEXMARKET_LOG": "warn",
            "HEXMARKET_COOKIE_SECURE": "false",
            "HEXMARKET_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "HEXMARKET_MAIL_FROM": "hexmarket <no-reply@probe.example.com>",
            "HEXMARKET_WORKERS": "2",
            "HEXMARKET_ACTOR_THREADS": "2",
        }
        self.process = None
        self.base = f"http://127.0.0.1:{port}"

    def create_admin(self, admin_email, password):
        out = subprocess.run(
            [self.binary, "create-admin", "--email", admin_email, "--name", "Probe Admin"],
            input=password + "\n", capture_output=True, text=True, env=self.env, timeout=60, check=True,
        )
        return out.stdout

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


def short(order_id):
    return order_id[:8].upper()


def buy(base, seeded, token):
    must([200], call(base, "POST", "/api/v1/cart/items", {"product_id": seeded["product_id"], "quantity": 1}, token), "cart add")
    placed = must(
        [201],
        call(base, "POST", "/api/v1/checkout", {"delivery_address": seeded["home"], "payment_method": "simulated"},
             token, {"Idempotency-Key": str(uuid.uuid4())}),
        "checkout",
    )
    payment = placed["payment"]["id"]
    must([200], call(base, "POST", f"/api/v1/payments/{payment}/simulate", {"outcome": "succeed"}, token), "pay")
    return placed["orders"][0]["id"]


def answer(base, token, order, decline):
    """The store's answer; a 5xx or a refused connection (the node is down) is retried."""
    path, body = (f"/api/v1/orders/{order}/reject", {"reason": "sold out"}) if decline else (f"/api/v1/orders/{order}/accept", {})
    for _ in range(100):
        try:
            status, reply = call(base, "POST", path, body, token)
        except OSError:
            time.sleep(0.2)
            continue
        if status == 200:
            return
        if status == 409 and isinstance(reply, dict) and reply.get("code") == "illegal_transition":
            return  # answered before the crash
        if status >= 500:
            time.sleep(0.2)
            continue
        raise Refused(f"answer {order}: {status} {reply}")
    raise Refused(f"answer {order}: the node never answered")


def main(binary, work):
    sink = Sink()
    smtp_port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    node = Node(binary, os.path.join(work, "data"), free_port(), smtp_port, os.path.join(work, "node.log"))
    try:
        admin_password = "kestrel-" + uuid.uuid4().hex[:16]
        printed = node.create_admin("admin@notifications.example.com", admin_password)
        admin_file = os.path.join(work, "admin.txt")
        with open(admin_file, "w") as f:
            f.write(f"admin@notifications.example.com\n{admin_password}\n{printed}")
        node.start()
        seed_file = os.path.join(work, "seed.json")
        seed(node.base, admin_file, seed_file)
        with open(seed_file) as f:
            seeded = json.load(f)
        vendor = seeded["users"]["vendor"]
        vendor_token = login(node.base, vendor["email"], vendor["password"])

        customers, orders = [], []
        for i in range(ORDERS):
            account = register(node.base, "customer", f"n{i}")
            token = login(node.base, account["email"], account["password"])
            orders.append(buy(node.base, seeded, token))
            customers.append({**account, "token": token})
        declined = {order for i, order in enumerate(orders) if i % 3 == 2}

        for i, order in enumerate(orders):
            if i == ORDERS // 2:
                time.sleep(0.3)  # some messages of the first half are being sent
                node.kill()
                print(f"notifications: killed the node after {i} answers", file=sys.stderr)
                node.start()
                vendor_token = login(node.base, vendor["email"], vendor["password"])
            answer(node.base, vendor_token, order, order in declined)

        expected = collections.Counter()
        owner = vendor["email"].lower()
        for account, order in zip(customers, orders):
            to, ref = account["email"].lower(), short(order)
            expected[(to, f"Receipt for order {ref}")] += 1
            expected[(owner, f"New order {ref}")] += 1
            if order in declined:
                expected[(to, f"Order {ref} declined")] += 1
                expected[(to, f"Refund for order {ref}")] += 1
                expected[(owner, f"Refund on order {ref}")] += 1

        deadline = time.time() + WAIT_SECS
        while True:
            got = collections.Counter((to, subject) for to, subject, _ in sink.received())
            missing = [k for k in expected if got[k] < expected[k]]
            if not missing or time.time() > deadline:
                break
            time.sleep(1)
        time.sleep(3)  # anything sent twice would show by now
        received = sink.received()
        got = collections.Counter((to, subject) for to, subject, _ in received)
        problems = [f"missing: {k}" for k in expected if got[k] < expected[k]]
        # A message may arrive twice only as the README says: sent again after the crash with
        # the same Message-ID (the provider took it, the node died before recording that). A
        # repeat with another id would be a second message, which is a bug.
        ids = collections.defaultdict(set)
        for to, subject, message_id in received:
            ids[(to, subject)].add(message_id)
        repeats = [k for k in got if got[k] > 1]
        problems += [f"{got[k]} times with {len(ids[k])} Message-IDs: {k}" for k in repeats if len(ids[k]) > 1 or got[k] > 2]
        if repeats:
            print(f"notifications: {len(repeats)} message(s) repeated across the crash, each with its own Message-ID once", file=sys.stderr)
        problems += [f"unexpected: {k}" for k in got if k[0] in {owner} | {c['email'].lower() for c in customers} and k not in expected]

        feeds_checked = 0
        for account, order in zip(customers, orders):
            token = login(node.base, account["email"], account["password"])
            feed = must([200], call(node.base, "GET", "/api/v1/notifications?limit=100", token=token), "feed")
            kinds = collections.Counter(item["event"] for item in feed["items"] if item["order_id"] == order)
            answered = "order_rejected" if order in declined else "order_accepted"
            for kind in ("order_paid", answered):
                if kinds[kind] != 1:
                    problems.append(f"in-app {kind} of {short(order)}: {kinds[kind]} times")
            feeds_checked += 1
        if problems:
            for p in problems:
                print(f"notifications: {p}", file=sys.stderr)
            sys.exit(f"notifications: {len(problems)} problem(s) in {len(received)} messages")
        print(
            f"notifications: {len(received)} emails to {len(customers) + 1} mailboxes, each once; "
            f"{feeds_checked} in-app feeds complete; across one SIGKILL",
            file=sys.stderr,
        )
    finally:
        node.stop()
        controller.stop()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    try:
        main(*sys.argv[1:])
    except Refused as e:
        sys.exit(f"notifications: {e}")
