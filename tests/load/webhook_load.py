"""Load run of POST /webhooks/stripe (issue 4): a measurement to report, not
a test. Sends signed events with distinct ids (each one recorded in its own
transaction: the exactly-once path) and, as the baseline in the same run,
the same requests with a wrong signature (HTTP, body cap and signature check
only). Several client threads, keep-alive connections.

    python3 tests/load/webhook_load.py URL SECRET [EVENTS] [THREADS] [SERVER_PID]

The python client is slower than the server, so requests per second measure
the client; with SERVER_PID, the server's own CPU time per request (from
/proc) is printed too, and the ratio is taken from that.
"""
import os
import hashlib
import hmac
import json
import statistics
import sys
import threading
import time

import requests

url, secret = sys.argv[1], sys.argv[2]
events = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 4
server_pid = sys.argv[5] if len(sys.argv) > 5 else None
TICK = os.sysconf("SC_CLK_TCK")


def server_cpu():
    if server_pid is None:
        return 0.0
    with open(f"/proc/{server_pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def payload(i, run):
    return json.dumps({
        "id": f"evt_load_{run}_{i}", "object": "event", "api_version": "2026-07-29.dahlia",
        "created": int(time.time()), "type": "customer.subscription.updated", "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "data": {"object": {"id": f"sub_load_{i}", "object": "subscription",
                            "customer": "cus_load_unknown", "status": "active",
                            "items": {"object": "list", "data": []}}},
    }, indent=2)


def signature(body, key):
    t = int(time.time())
    mac = hmac.new(key.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def run(name, key, expect):
    bodies = [payload(i, name) for i in range(events)]
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
            if r.status_code != expect:
                bad.append(r.status_code)
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
    cpu_us = (server_cpu() - cpu0) / events * 1e6
    latencies.sort()
    p50 = statistics.median(latencies) * 1000
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
    print(f"{name:9} {events / wall:8.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms"
          f"  server CPU {cpu_us:6.1f} us/request  unexpected statuses: {len(bad)}")
    return cpu_us if server_pid else events / wall


for round_ in (1, 2):
    print(f"round {round_}")
    refused = run(f"refused{round_}", "whsec_wrong", 400)
    applied = run(f"applied{round_}", secret, 200)
    if server_pid:
        print(f"  a recorded event costs the server {applied / refused:.2f}x the CPU of a refused one")
    else:
        print(f"  recorded events at {applied / refused:.2f}x the rate of refused ones")
