#!/usr/bin/env python3
"""Embedding benchmarks side by side, in one run: the PyTorch/sentence-transformers baseline
(../shared/tools/torch_baseline.py), triage's embedder, and candle-transformers' stock BertModel,
interleaved round by round (this machine's speed drifts, so only same-run ratios mean anything);
then the peak RSS of `triage serve` under load with the largest batches it accepts.

  python3 scripts/bench_embed.py [--rounds 3] [--torch-python ../torch-venv/bin/python]

Prints a Markdown summary and, as its last line, one JSON object with the medians and ratios.
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, time, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--messages", default="../shared/data/bench/messages-2000.txt")
ap.add_argument("--model-dir", default="models/all-MiniLM-L6-v2")
ap.add_argument("--torch-python", default="../torch-venv/bin/python")
ap.add_argument("--triage", default="target/release/triage")
args = ap.parse_args()


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def triage_bench(*extra):
    out = subprocess.run([args.triage, "bench", "embed", "--input", args.messages, "--model-dir", args.model_dir,
                          "--repeats", "1", *extra], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def torch_bench():
    env = dict(os.environ, MODEL_DIR=args.model_dir, MESSAGES=args.messages, HF_HUB_OFFLINE="1")
    out = subprocess.run([args.torch_python, "../shared/tools/torch_baseline.py", "bench", "1,32", "1"],
                         check=True, capture_output=True, text=True, env=env)
    res = {}
    for line in out.stdout.splitlines():
        m = re.match(r"RESULT impl=torch mode=(\w+) bs=(\d+) .*sent_per_s=([\d.]+) batch_ms_p50=([\d.]+) batch_ms_p99=([\d.]+)", line)
        if m:
            res[m.group(1)] = dict(per_s=float(m.group(3)), p50=float(m.group(4)), p99=float(m.group(5)))
        m = re.match(r"VmHWM\(ru_maxrss\): ([\d.]+) MB", line)
        if m:
            res["rss_mb"] = float(m.group(1))
    return res


rows = {k: [] for k in ["torch_sorted32", "torch_single_p50", "torch_single_p99", "torch_rss",
                        "triage_per_s", "triage_p50", "triage_p99", "triage_rss", "triage_all_p50",
                        "stock_per_s", "stock_p50", "stock_rss"]}
for r in range(args.rounds):
    log(f"round {r + 1}/{args.rounds}: torch")
    t = torch_bench()
    rows["torch_sorted32"].append(t["sorted"]["per_s"])
    rows["torch_single_p50"].append(t["single"]["p50"])
    rows["torch_single_p99"].append(t["single"]["p99"])
    rows["torch_rss"].append(t["rss_mb"])
    log(f"round {r + 1}/{args.rounds}: triage")
    o = triage_bench("--single", "2000")
    rows["triage_per_s"].append(o["sentences_per_s"])
    rows["triage_p50"].append(o["single_p50_ms"])
    rows["triage_p99"].append(o["single_p99_ms"])
    rows["triage_rss"].append(o["peak_rss_mb"])
    threads = o["threads"]
    # Same message set as torch's single-message run (all lengths), for a like-for-like latency ratio.
    o = triage_bench("--single", "2000", "--single-max-tokens", "100000")
    rows["triage_all_p50"].append(o["single_p50_ms"])
    log(f"round {r + 1}/{args.rounds}: candle stock")
    o = triage_bench("--impl", "candle-stock", "--max-batch-size", "32", "--single", "300")
    rows["stock_per_s"].append(o["sentences_per_s"])
    rows["stock_p50"].append(o["single_p50_ms"])
    rows["stock_rss"].append(o["peak_rss_mb"])

med = {k: statistics.median(v) for k, v in rows.items() if v}


# Peak RSS of the server with the model loaded, driven with the largest requests it accepts.
def serve_rss():
    env = dict(os.environ, TRIAGE_BIND="127.0.0.1:18089", TRIAGE_MODEL_DIR=args.model_dir, TRIAGE_API_TOKENS="")
    proc = subprocess.Popen([args.triage, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen("http://127.0.0.1:18089/readyz").status == 200:
                    break
            except Exception:
                time.sleep(0.1)
        msgs = [m for m in open(args.messages).read().splitlines() if m.strip()]
        longest = sorted(msgs, key=len)[-256:]
        long_text = " ".join(msgs[:40])[:3000]  # over 256 tokens: truncated by the server
        for inputs in (longest, [long_text] * 256, msgs[:256]):
            req = urllib.request.Request("http://127.0.0.1:18089/v1/embed", json.dumps({"inputs": inputs}).encode(),
                                         {"content-type": "application/json"})
            urllib.request.urlopen(req).read()
        status = open(f"/proc/{proc.pid}/status").read()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


log("medians:", json.dumps(med))
med["serve_peak_rss_mb"] = serve_rss()
med["throughput_ratio_vs_torch"] = med["triage_per_s"] / med["torch_sorted32"]
med["throughput_ratio_vs_stock_candle"] = med["triage_per_s"] / med["stock_per_s"]
med["threads"] = threads
med["rounds"] = args.rounds

print(f"""
| implementation | batch throughput (msg/s) | single p50 / p99 (ms) | peak RSS (MB) |
|---|---|---|---|
| PyTorch + sentence-transformers, sorted batch 32 | {med['torch_sorted32']:.1f} | {med['torch_single_p50']:.2f} / {med['torch_single_p99']:.2f} (all messages) | {med['torch_rss']:.0f} |
| candle-transformers stock BertModel, sorted batch 32 | {med['stock_per_s']:.1f} | {med['stock_p50']:.2f} (< 40 tokens) | {med['stock_rss']:.0f} |
| **triage** (token-budgeted sorted batches) | **{med['triage_per_s']:.1f}** | **{med['triage_p50']:.2f} / {med['triage_p99']:.2f}** (< 40 tokens); {med['triage_all_p50']:.2f} p50 (all messages) | {med['triage_rss']:.0f} (bench), {med['serve_peak_rss_mb']:.0f} (`serve` under load) |

triage / PyTorch throughput: **{med['throughput_ratio_vs_torch']:.2f}x**; triage / stock candle: {med['throughput_ratio_vs_stock_candle']:.2f}x
(medians of {args.rounds} interleaved rounds, {threads} threads).
""")
print(json.dumps(med))
