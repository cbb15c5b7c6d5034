"""Load run of POST /webhooks/stripe (issue 4): a measurement to report, with
its outcome checked. Run by tests/load/webhook-load.sh.

Setup: N organisations each sign up, start a checkout and pay on the fake
Stripe's hosted page (tests/src/bin/fake-stripe.rs), so that each has a
Stripe customer and a subscription. Load: for each, a signed
`checkout.session.completed` event (the path that creates a license and
queues its key mail, asking Stripe for the subscription first), every event
delivered TWICE by different client threads; as the baseline in the same
run, the same requests with a wrong signature (HTTP, body cap and signature
check only). After the run the database must hold exactly N events, N
licenses and N mails; any unexpected status or count fails the run (exit 1).

    python3 tests/load/webhook_load.py URL SECRET STRIPE_API_BASE STRIPE_KEY DB [EVENTS] [THREADS] [SERVER_PID]

The python client is slower than the server, so requests per second measure
the client; with SERVER_PID, the server's own CPU time per request (from
/proc) is printed too, and the ratio is taken from that.
"""
import hashlib
import hmac
import json
import os
import sqlite3
import statistics
import sys
import threading
import time

import requests

url, secret, stripe_base, stripe_key, db_path = sys.argv[1:6]
events = int(sys.argv[6]) if len(sys.argv) > 6 else 300
threads = int(sys.argv[7]) if len(sys.argv) > 7 else 4
server_pid = sys.argv[8] if len(sys.argv) > 8 else None
TICK = os.sysconf("SC_CLK_TCK")
issuer = url.split("/webhooks/")[0]
PASSWORD = "correct horse battery staple"
failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL: {message}", file=sys.stderr)


def server_cpu():
    if server_pid is None:
        return 0.0
    with open(f"/proc/{server_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def expect(response, status, what):
    if response.status_code != status:
        raise SystemExit(f"setup: {what} answered {response.status_code}, not {status}: {response.text[:500]}")
    return response


def paid_checkout(i):
    """An organisation that paid: (session id, customer id, subscription id)."""
    s = requests.Session()
    email = f"load{i}@example.com"
    expect(s.post(f"{issuer}/api/v1/auth/signup",
                  json={"email": email, "password": PASSWORD, "company_name": f"Load {i}"}), 202, "signup")
    token = expect(s.post(f"{issuer}/api/v1/auth/login", json={"email": email, "password": PASSWORD}),
                   200, "login").json()["access_token"]
    started = expect(s.post(f"{issuer}/api/v1/billing/checkout",
                            headers={"Authorization": f"Bearer {token}"},
                            json={"plan": "pilot-starter", "interval": "month"}), 200, "checkout").json()
    hosted = started["url"]
    expect(s.get(hosted), 200, "the hosted checkout page")
    expect(s.post(hosted, allow_redirects=False, data={
        "email": "", "card_number": "4242 4242 4242 4242", "card_expiry": "12 / 34",
        "card_cvc": "123", "billing_name": "Load Customer"}), 303, "paying")
    session = expect(s.get(f"{stripe_base.rstrip('/')}/v1/checkout/sessions/{started['session_id']}",
                           headers={"Authorization": f"Bearer {stripe_key}"}), 200, "the session").json()
    return session["id"], session["customer"], session["subscription"]


def payload(n, paid):
    session_id, customer, subscription = paid
    return json.dumps({
        "id": f"evt_load_{n}", "object": "event", "api_version": "2026-07-29.dahlia",
        "created": int(time.time()), "type": "checkout.session.completed", "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "data": {"object": {"id": session_id, "object": "checkout.session", "customer": customer,
                            "subscription": subscription, "mode": "subscription",
                            "payment_status": "paid", "status": "complete"}},
    }, indent=2)


def signature(body, key):
    t = int(time.time())
    mac = hmac.new(key.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def run(name, bodies, key, expect_status):
    latencies = []
    lock = threading.Lock()
    bad = []

    def worker(part):
        s = requests.Session()
        mine = []
        for body in part:
            headers = {"Content-Type": "application/json", "Stripe-Signature": signature(body, key)}
            t0 = time.perf_counter()
            r = s.post(url, data=body.encode(), headers=headers)
            mine.append(time.perf_counter() - t0)
            if r.status_code != expect_status:
                with lock:
                    bad.append((r.status_code, r.text[:200]))
        with lock:
            latencies.extend(mine)

    parts = [bodies[i::threads] for i in range(threads)]
    cpu0 = server_cpu()
    start = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - start
    cpu_us = (server_cpu() - cpu0) / len(bodies) * 1e6
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[max(int(len(latencies) * 0.99) - 1, 0)] * 1000
    print(f"{name:9} {len(bodies) / wall:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
          f"  server CPU {cpu_us:6.1f} us/request  unexpected statuses: {len(bad)}")
    if bad:
        fail(f"{name}: {len(bad)} answers were not {expect_status}, first: {bad[0]}")
    return cpu_us if server_pid else len(bodies) / wall


def count(sql):
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        return db.execute(sql).fetchone()[0]


print(f"setup: {events} organisations pay on the fake Stripe")
t0 = time.perf_counter()
paid = [paid_checkout(i) for i in range(events)]
print(f"setup took {time.perf_counter() - t0:.1f} s")
bodies = [payload(n, p) for n, p in enumerate(paid)]
if count("SELECT count(*) FROM stripe_events") != 0 or count("SELECT count(*) FROM licenses") != 0:
    raise SystemExit("setup: the issuer already recorded events or licenses")

refused = run("refused", bodies, "whsec_wrong", 400)
if count("SELECT count(*) FROM stripe_events") != 0:
    fail("a refused delivery was recorded")
# Each event twice, the two copies far apart in the list so that different
# threads deliver them, mostly at about the same time.
applied = run("applied", bodies + bodies, secret, 200)
if refused <= 0:
    print("  too few requests to compare (raise EVENTS)")
elif server_pid:
    print(f"  a license-creating delivery costs the server {applied / refused:.2f}x the CPU of a refused one")
else:
    print(f"  license-creating deliveries at {applied / refused:.2f}x the rate of refused ones")

recorded = count("SELECT count(*) FROM stripe_events")
licenses = count("SELECT count(*) FROM licenses")
subscribed = count("SELECT count(DISTINCT stripe_subscription_id) FROM licenses")
mails = count("SELECT count(*) FROM email_outbox")
print(f"rows after {2 * events} deliveries of {events} events: stripe_events {recorded}, "
      f"licenses {licenses} ({subscribed} subscriptions), mails {mails}")
for what, got in [("stripe_events", recorded), ("licenses", licenses),
                  ("licensed subscriptions", subscribed), ("mails", mails)]:
    if got != events:
        fail(f"{what}: {got}, not exactly {events}")
if failures:
    sys.exit(1)
print("OK: every event recorded exactly once, one license and one mail each")
