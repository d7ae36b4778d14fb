#!/usr/bin/env python3
"""Peak RSS of `triage serve` (embedder, fine-tuned status layers and grouping model loaded) driven
with the largest requests it accepts, on /v1/embed and on /v1/classify (which runs the tuned layers).

  python3 scripts/serve_rss.py [target/release/triage]

Last line: one JSON object.
"""
import json, re, signal, subprocess, time, urllib.request, os, sys, tempfile
triage = sys.argv[1] if len(sys.argv) > 1 else "target/release/triage"
db = os.path.join(tempfile.mkdtemp(), "rss.db")
env = dict(os.environ, TRIAGE_BIND="127.0.0.1:18090", TRIAGE_MODEL_DIR="models/all-MiniLM-L6-v2", TRIAGE_API_TOKENS="",
           TRIAGE_DATABASE_URL="sqlite://" + db)
proc = subprocess.Popen([triage, "serve"], env=env, stderr=subprocess.DEVNULL)
try:
    for _ in range(600):
        try:
            if urllib.request.urlopen("http://127.0.0.1:18090/readyz").status == 200: break
        except Exception: time.sleep(0.1)
    msgs = [m for m in open("../shared/data/bench/messages-2000.txt").read().splitlines() if m.strip()]
    longest = sorted(msgs, key=len)[-256:]
    long_text = " ".join(msgs[:40])[:3000]
    for path in ("/v1/embed", "/v1/classify"):
        for inputs in (longest, [long_text] * 256, msgs[:256]):
            req = urllib.request.Request("http://127.0.0.1:18090" + path, json.dumps({"inputs": inputs}).encode(), {"content-type": "application/json"})
            urllib.request.urlopen(req).read()
    status = open(f"/proc/{proc.pid}/status").read()
    print(json.dumps({"serve_peak_rss_mb": int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024}))
finally:
    proc.send_signal(signal.SIGTERM); proc.wait(timeout=30)
