#!/usr/bin/env python3
"""Embedding benchmarks with ONNX Runtime beside every number, in one run: ORT f32 / int8 (per
tensor) / int8 (per channel) (../shared/tools/ort_baseline.py) and triage f32 / int8, interleaved
round by round (the order alternates between rounds; this machine's speed drifts and is shared, so
only same-run ratios mean anything); then parity with sentence-transformers on the parity fixture
inputs (triage through `triage serve`'s /v1/embed, ORT through the same inputs) and the peak RSS of
`triage serve` driven with its largest requests, in each precision.

Set up once, outside the repository:
  python3 -m venv ../venv-bench && ../venv-bench/bin/pip install torch sentence-transformers onnx onnxruntime
  ../venv-bench/bin/python ../shared/tools/ort_baseline.py export ../ort-models
  ../venv-bench/bin/python ../shared/tools/ort_baseline.py quantize ../ort-models
(last set up 2026-12-05 on an AMD EPYC family 23 machine: torch 2.15.0, sentence-transformers 6.3.0,
transformers 5.25.0, onnx 1.23.2, onnxruntime 1.32.0; the export needs `MODEL_DIR` set to the model
folder when it is not `models/all-MiniLM-L6-v2` below the current directory.)

  python3 scripts/bench_embed.py [--rounds 3] [--downstream]

`--downstream` also runs the status and grouping dev evaluations under each precision.
Prints a Markdown summary and, as its last line, one JSON object with the medians and ratios.
"""
import argparse, json, math, os, re, signal, statistics, subprocess, sys, time, urllib.error, urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--messages", default="../shared/data/bench/messages-2000.txt")
ap.add_argument("--model-dir", default="models/all-MiniLM-L6-v2")
ap.add_argument("--python", default="../venv-bench/bin/python", help="venv with torch, sentence-transformers, onnxruntime")
ap.add_argument("--ort-dir", default="../ort-models")
ap.add_argument("--triage", default="target/release/triage")
ap.add_argument("--single", type=int, default=500, help="single-message latency over this many messages < 40 tokens")
ap.add_argument("--downstream", action="store_true")
ap.add_argument("--skip-parity", action="store_true")
args = ap.parse_args()

ORT = {"ort_f32": "f32.onnx", "ort_int8": "int8.onnx", "ort_int8pc": "int8-pc.onnx"}
TRIAGE = {"triage_f32": "f32", "triage_int8": "int8"}
FIXTURES = "tests/fixtures/"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def triage_bench(precision):
    out = subprocess.run([args.triage, "bench", "embed", "--input", args.messages, "--model-dir", args.model_dir,
                          "--repeats", "1", "--single", str(args.single), "--precision", precision],
                         check=True, capture_output=True, text=True)
    o = last_json(out.stdout)
    return dict(per_s=o["sentences_per_s"], p50=o["single_p50_ms"], p99=o["single_p99_ms"], rss=o["peak_rss_mb"],
                threads=o["threads"], kernels=o.get("kernels", "?"))


def ort_bench(model):
    env = dict(os.environ, MODEL_DIR=args.model_dir, MESSAGES=args.messages, HF_HUB_OFFLINE="1")
    out = subprocess.run([args.python, "../shared/tools/ort_baseline.py", "bench", os.path.join(args.ort_dir, model)],
                         check=True, capture_output=True, text=True, env=env)
    o = last_json(out.stdout)
    return dict(per_s=o["sentences_per_s"], p50=o["single_p50_ms"], p99=o["single_p99_ms"], rss=o["peak_rss_mb"],
                version=o["onnxruntime"])


def cpu():
    info = open("/proc/cpuinfo").read()
    get = lambda k: (re.search(rf"^{k}\s*:\s*(.*)$", info, re.M) or [None, "?"])[1]
    flags = get("flags").split()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{get('model name')} (family {get('cpu family')}, model {get('model')}; {os.cpu_count()} CPUs; {' '.join(isa)})"


rows = {k: [] for k in list(ORT) + list(TRIAGE)}
order = ["ort_f32", "triage_f32", "ort_int8", "triage_int8", "ort_int8pc"]
started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
load_start = os.getloadavg()[0]
for r in range(args.rounds):
    for name in (order if r % 2 == 0 else order[::-1]):
        log(f"round {r + 1}/{args.rounds}: {name}")
        rows[name].append(ort_bench(ORT[name]) if name in ORT else triage_bench(TRIAGE[name]))

log("rounds: " + json.dumps(rows))  # kept even if a later step fails
med = {}
for name, runs in rows.items():
    for k in ("per_s", "p50", "p99", "rss"):
        med[f"{name}_{k}"] = statistics.median(x[k] for x in runs)
# Ratios per round (same round = same machine state), then their median.
for a, b in [("triage_f32", "ort_f32"), ("triage_int8", "ort_int8"), ("triage_int8", "ort_int8pc")]:
    med[f"{a}_over_{b}_throughput"] = statistics.median(x["per_s"] / y["per_s"] for x, y in zip(rows[a], rows[b]))
    med[f"{a}_over_{b}_p50"] = statistics.median(x["p50"] / y["p50"] for x, y in zip(rows[a], rows[b]))


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BASE = None


def serve(precision, fn):
    global BASE
    port = free_port()  # not a fixed one: other checkouts may be benchmarking on this machine
    BASE = f"http://127.0.0.1:{port}"
    env = dict(os.environ, TRIAGE_BIND=f"127.0.0.1:{port}", TRIAGE_MODEL_DIR=args.model_dir, TRIAGE_API_TOKENS="",
               TRIAGE_EMBED_PRECISION=precision)
    proc = subprocess.Popen([args.triage, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300  # a loaded machine can take a while to load and warm the models
        while True:
            if proc.poll() is not None:
                sys.exit(f"triage serve exited with {proc.returncode} before it was ready")
            try:
                if urllib.request.urlopen(BASE + "/readyz").status == 200:
                    break
            except Exception:
                pass
            if time.time() > deadline:
                sys.exit("triage serve was not ready within 300 s")
            time.sleep(0.1)
        return fn(proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def post_embed(inputs):
    req = urllib.request.Request(BASE + "/v1/embed", json.dumps({"inputs": inputs}).encode(),
                                 {"content-type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def parity_and_rss(proc):
    out = {}
    if not args.skip_parity:
        inputs = json.load(open(FIXTURES + "parity-inputs.json"))
        ref = json.load(open(FIXTURES + "parity-reference.json"))["embeddings"]
        res = post_embed(inputs)
        vecs = res["embeddings"] if isinstance(res, dict) else res
        cs = [cos(v, r) for v, r in zip(vecs, ref)]
        out.update(parity_min=min(cs), parity_mean=statistics.mean(cs))
    msgs = [m for m in open(args.messages).read().splitlines() if m.strip()]
    longest = sorted(msgs, key=len)[-256:]
    long_text = " ".join(msgs[:40])[:3000]  # over 256 tokens: truncated by the server
    for inputs in (longest, [long_text] * 256, msgs[:256]):
        try:
            post_embed(inputs)
        except urllib.error.HTTPError as e:
            # The server's 30 s request limit on a loaded machine: the work was still done (the
            # peak RSS below counts it), but say so.
            log(f"serve: a largest request answered {e.code}: {e.read()[:200]!r}")
            out["serve_errors"] = out.get("serve_errors", 0) + 1
    status = open(f"/proc/{proc.pid}/status").read()
    out["serve_rss"] = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    return out


for name, precision in TRIAGE.items():
    log(f"serve: {precision}")
    for k, v in serve(precision, parity_and_rss).items():
        med[f"{name}_{k}"] = v

if not args.skip_parity:
    # ORT on the same parity inputs, against sentence-transformers run live.
    code = (
        "import json, sys; sys.path.insert(0, '../shared/tools'); import ort_baseline as o\n"
        f"inputs = json.load(open('{FIXTURES}parity-inputs.json'))\n"
        "o.messages = lambda: inputs\n"
        "o.parity(len(inputs), sys.argv[1])\n"
    )
    for name, model in ORT.items():
        log(f"parity: {name}")
        out = subprocess.run([args.python, "-c", code, os.path.join(args.ort_dir, model)], check=True,
                             capture_output=True, text=True, env=dict(os.environ, MODEL_DIR=args.model_dir))
        o = last_json(out.stdout)
        med[f"{name}_parity_min"] = min(o["single_min"], o["bs32_min"])
        med[f"{name}_parity_mean"] = o["single_mean"]


def downstream(precision):
    env = dict(os.environ, TRIAGE_EMBED_PRECISION=precision, TRIAGE_MODEL_DIR=args.model_dir)
    st = last_json(subprocess.run([args.triage, "eval", "status", "--data", "training-data/status/dev.jsonl"],
                                  check=True, capture_output=True, text=True, env=env).stdout)
    gr = last_json(subprocess.run([args.triage, "eval", "group", "--data", "../shared/data/grouping/ubuntu-dev.jsonl"],
                                  check=True, capture_output=True, text=True, env=env).stdout)
    return st, gr


if args.downstream:
    for name, precision in TRIAGE.items():
        log(f"downstream: {precision}")
        st, gr = downstream(precision)
        med[f"{name}_status"] = st
        med[f"{name}_group"] = gr

med["rounds"] = args.rounds
med["threads"] = rows["triage_f32"][0]["threads"]
med["onnxruntime"] = rows["ort_f32"][0]["version"]
med["cpu"] = cpu()
med["kernels"] = {name: rows[name][0]["kernels"] for name in TRIAGE}
med["started"] = started
med["load_avg_1min"] = [round(load_start, 1), round(os.getloadavg()[0], 1)]


def row(label, name):
    par = med.get(f"{name}_parity_min")
    par = f"{par:.6f}" if par is not None else "-"
    rss = f"{med[name + '_rss']:.0f}"
    if f"{name}_serve_rss" in med:
        rss += f" (bench), {med[name + '_serve_rss']:.0f} (`serve`)"
    return (f"| {label} | {med[name + '_per_s']:.1f} | {med[name + '_p50']:.2f} / {med[name + '_p99']:.2f} "
            f"| {par} | {rss} |")


print(f"""
CPU: {med['cpu']}; {med['threads']} threads each; ONNX Runtime {med['onnxruntime']}; started {started};
our kernels: f32 {med['kernels']['triage_f32']}, int8 {med['kernels']['triage_int8']}; 1-minute load average {med['load_avg_1min'][0]} at the start, {med['load_avg_1min'][1]} at the end;
medians of {args.rounds} interleaved rounds.

| implementation | batch msg/s | single p50 / p99 (ms, < 40 tokens) | parity min cosine | peak RSS (MB) |
|---|---|---|---|---|
{row('ONNX Runtime f32', 'ort_f32')}
{row('**triage f32**', 'triage_f32')}
{row('ONNX Runtime int8 (per tensor)', 'ort_int8')}
{row('ONNX Runtime int8 (per channel)', 'ort_int8pc')}
{row('**triage int8**', 'triage_int8')}

Same-round ratios (median over rounds): f32 throughput triage / ORT **{med['triage_f32_over_ort_f32_throughput']:.2f}x**,
single p50 triage / ORT **{med['triage_f32_over_ort_f32_p50']:.2f}x**; int8 throughput triage / ORT per tensor
**{med['triage_int8_over_ort_int8_throughput']:.2f}x** (per channel {med['triage_int8_over_ort_int8pc_throughput']:.2f}x),
single p50 {med['triage_int8_over_ort_int8_p50']:.2f}x.
""")
print(json.dumps(med))
