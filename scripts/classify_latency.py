#!/usr/bin/env python3
"""Latency of POST /v1/classify against POST /v1/embed of the same text, on a running server.

Usage: python3 scripts/classify_latency.py [BASE_URL] [N]   (default http://127.0.0.1:8080, 300)
Requests alternate between the two endpoints so load on the machine hits both alike; prints the
median and p90 of each and their difference as one JSON line.
"""
import json
import os
import statistics
import sys
import time
import urllib.request

base = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"
n = int(sys.argv[2]) if len(sys.argv) > 2 else 300
token = os.environ.get("TRIAGE_TOKEN")
texts = [
    "Taking a look",
    "I just confirmed with the team, this is fixed in 1.4",
    "can you send the logs? We can't reproduce it on 2.3 with the default config.",
]


def post(path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", "Bearer " + token)
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        r.read()
    return (time.perf_counter() - t) * 1000


times = {"embed": [], "classify": []}
for i in range(n + 20):
    text = texts[i % len(texts)]
    e = post("/v1/embed", {"inputs": text})
    c = post("/v1/classify", {"text": text, "role": "agent"})
    if i >= 20:  # warm-up
        times["embed"].append(e)
        times["classify"].append(c)
out = {}
for k, v in times.items():
    v.sort()
    out[k + "_p50_ms"] = round(statistics.median(v), 3)
    out[k + "_p90_ms"] = round(v[int(0.9 * len(v))], 3)
out["requests_each"] = n
out["p50_difference_ms"] = round(out["classify_p50_ms"] - out["embed_p50_ms"], 3)
print(json.dumps(out))
