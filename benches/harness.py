#!/usr/bin/env python3
"""apiproxy load harness (run through `make bench` / benches/run.sh).

Starts, on loopback only, a fast mock provider (bench-mock), the bare
Pingora passthrough (bench-floor) and apiproxy (release build), then drives
them with oha in interleaved rounds:

  A. saturation, closed loop, 32 connections: direct, floor, apiproxy
     (OpenAI, Anthropic->OpenAI translation, logical model over two upstreams)
  B. fixed rate, open loop (oha -q, latency corrected): the same scenarios
  C. 200-event SSE streams: direct, floor, apiproxy passthrough, apiproxy
     translated; time to first byte and total time from curl, one stream at
     a time, and streams/s with latency from oha at 32 connections
  D. peak RSS of apiproxy (and of the floor) with 1,000 streams open at once

and prints a Markdown table, written with the raw figures to
benches/results/ (latest.md, latest.json and a time-stamped copy).

Nothing here asserts a number: the harness measures and reports.
Environment knobs: BENCH_SECONDS (per measurement, default 5), BENCH_ROUNDS
(default 3), BENCH_RATE (default 2000), BENCH_CONNS (default 32),
BENCH_STREAMS (default 1000), BENCH_PROFILE=1 (perf record apiproxy during
one extra run of BENCH_PROFILE_SCENARIO, default `openai`, e.g. `openai-sse`
or `anthropic-sse`; writes benches/results/perf-*.txt), BENCH_ONLY (a comma
list of `json`, `sse`, `memory`: run only those parts, e.g. `BENCH_ONLY=sse`
while working on streams; results then go to benches/results/partial-*).
"""

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"

SECONDS = float(os.environ.get("BENCH_SECONDS", "5"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
RATE = int(os.environ.get("BENCH_RATE", "2000"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
TTFB_SAMPLES = int(os.environ.get("BENCH_TTFB_SAMPLES", "200"))
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
PROFILE_SCENARIO = os.environ.get("BENCH_PROFILE_SCENARIO", "openai")
ONLY = {p.strip() for p in os.environ.get("BENCH_ONLY", "json,sse,memory").split(",") if p.strip()}
CLIENT_KEY = "sk-bench-client-key-0001"
# A key with rpm and tpm limits: every request through it counts in the store
# (scenarios 6a/6b/6c compare the embedded store with one Redis and with a
# three-master Redis Cluster).
LIMITED_KEY = "sk-bench-limited-key-0001"
TICK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (1-based) of the whole line.
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Servers:
    def __init__(self, bin_dir, workdir):
        self.bin_dir = Path(bin_dir)
        self.workdir = Path(workdir)
        self.procs = []
        self.ports = {}

    def start(self, name, args, port, env=None):
        out = open(self.workdir / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        self.procs.append((name, p))
        wait_port(port, p, name)
        self.ports[name] = port
        return p

    def stop(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if name.startswith(("apiproxy", "floor")) else signal.SIGTERM)
        for name, p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


def apiproxy_config(ports, workdir, name="apiproxy", metrics="metrics", redis_url=None):
    store = f"store:\n  redis_url: {redis_url}\n" if redis_url else ""
    return f"""# written by benches/harness.py
{store}server:
  listen: 127.0.0.1:{ports[name]}
  metrics_listen: 127.0.0.1:{ports[metrics]}
  threads: 2
  pid_file: {workdir}/{name}.pid
  upgrade_sock: {workdir}/{name}-upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
log:
  level: info
auth:
  keys:
    - {{ name: bench, key: {CLIENT_KEY} }}
    - {{ name: limited, key: {LIMITED_KEY}, rpm: 1000000000, tpm: 1000000000000 }}
  admin_keys: [sk-bench-admin-key-0001]
providers:
  - {{ id: mock, kind: openai, base_url: "http://127.0.0.1:{ports['mock']}", api_keys: [sk-up-1], models: [bench-model] }}
  - {{ id: mock2, kind: openai, base_url: "http://127.0.0.1:{ports['mock']}", api_keys: [sk-up-2], models: [bench-model-2] }}
  - {{ id: slow, kind: openai, base_url: "http://127.0.0.1:{ports['mock_slow']}", api_keys: [sk-up-3], models: [slow-model], read_timeout_ms: 120000 }}
models:
  - name: bench-logical
    upstreams:
      - {{ provider: mock, model: bench-model }}
      - {{ provider: mock2, model: bench-model }}
"""


def chat_body(model, stream=False):
    b = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello in one sentence."}]}
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":"))


def messages_body(model, stream=False):
    b = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Say hello in one sentence."}]}
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":"))


class Scenario:
    def __init__(self, key, label, target, path, body, headers, proc):
        self.key, self.label, self.target, self.path = key, label, target, path
        self.body, self.headers, self.proc = body, headers, proc

    def url(self, ports):
        return f"http://127.0.0.1:{ports[self.target]}{self.path}"


def scenarios():
    auth = ["Authorization: Bearer " + CLIENT_KEY]
    limited = ["Authorization: Bearer " + LIMITED_KEY]
    ant = ["x-api-key: " + CLIENT_KEY, "anthropic-version: 2023-06-01"]
    chat = "/v1/chat/completions"
    return {
        "json": [
            Scenario("direct", "1 direct (oha → mock)", "mock", chat, chat_body("bench-model"), auth, "mock"),
            Scenario("floor", "2 floor (bare Pingora proxy)", "floor", chat, chat_body("bench-model"), auth, "floor"),
            Scenario("openai", "3 apiproxy OpenAI→OpenAI, auth", "apiproxy", chat, chat_body("bench-model"), auth, "apiproxy"),
            Scenario("anthropic", "4a apiproxy Anthropic→OpenAI", "apiproxy", "/v1/messages",
                     messages_body("bench-model"), ant, "apiproxy"),
            Scenario("logical", "4b apiproxy logical model, 2 upstreams", "apiproxy", chat,
                     chat_body("bench-logical"), auth, "apiproxy"),
            Scenario("store-mem", "6a apiproxy, key with rpm+tpm, embedded store", "apiproxy", chat,
                     chat_body("bench-model"), limited, "apiproxy"),
            Scenario("store-redis", "6b apiproxy, key with rpm+tpm, Redis store", "apiproxy_redis", chat,
                     chat_body("bench-model"), limited, "apiproxy_redis"),
            Scenario("store-cluster", "6c apiproxy, key with rpm+tpm, Redis Cluster (3 masters)", "apiproxy_cluster",
                     chat, chat_body("bench-model"), limited, "apiproxy_cluster"),
        ],
        "sse": [
            Scenario("direct-sse", "1 direct SSE", "mock", chat, chat_body("bench-model", True), auth, "mock"),
            Scenario("floor-sse", "2 floor SSE", "floor", chat, chat_body("bench-model", True), auth, "floor"),
            Scenario("openai-sse", "5a apiproxy SSE passthrough", "apiproxy", chat, chat_body("bench-model", True),
                     auth, "apiproxy"),
            Scenario("anthropic-sse", "5b apiproxy SSE OpenAI→Anthropic", "apiproxy", "/v1/messages",
                     messages_body("bench-model", True), ant, "apiproxy"),
        ],
    }


def oha(url, body, headers, seconds, conns, rate=None, extra=()):
    args = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
            "-m", "POST", "-T", "application/json", "-d", body]
    for h in headers:
        args += ["-H", h]
    if rate:
        args += ["-q", str(rate), "--latency-correction"]
    args += list(extra)
    args.append(url)
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"oha failed ({r.returncode}): {r.stderr.strip()[:500]}")
    return json.loads(r.stdout)


def summarize(raw, cpu, pid_name):
    s = raw.get("summary", {})
    lp = raw.get("latencyPercentiles", {})
    codes = raw.get("statusCodeDistribution", {}) or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    bad = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    # Requests still in flight when the duration ends are cut by oha
    # ("aborted due to deadline"): not failures of the server.
    dist = raw.get("errorDistribution") or {}
    errors = sum(v for k, v in dist.items() if "deadline" not in k)
    ms = lambda v: None if v is None else v * 1000.0
    return {
        "rps": s.get("requestsPerSec"),
        "ok": ok,
        "non_2xx": bad,
        "errors": errors,
        "p50_ms": ms(lp.get("p50")),
        "p99_ms": ms(lp.get("p99")),
        "p999_ms": ms(lp.get("p99.9")),
        "cpu_us_per_req": (cpu * 1e6 / ok) if ok else None,
        "cpu_process": pid_name,
        "error_kinds": {k: v for k, v in dist.items() if "deadline" not in k},
    }


def run_oha(sc, servers, seconds, conns, rate=None):
    pid = dict(servers.procs_by_name)[sc.proc].pid
    c0 = cpu_seconds(pid)
    raw = oha(sc.url(servers.ports), sc.body, sc.headers, seconds, conns, rate)
    c1 = cpu_seconds(pid)
    return summarize(raw, c1 - c0, sc.proc)


def curl_ttfb(sc, servers, n, workdir):
    """Time to first byte and total time of `n` streams, one at a time, on one
    kept-alive connection (curl's own timers)."""
    body_file = Path(workdir) / f"{sc.key}.body"
    body_file.write_text(sc.body)
    args = ["curl", "-sS", "--http1.1", "-X", "POST", "-H", "Content-Type: application/json",
            "--data-binary", f"@{body_file}", "-o", "/dev/null",
            "-w", "%{stderr}%{http_code} %{time_starttransfer} %{time_total}\\n"]
    for h in sc.headers:
        args += ["-H", h]
    args.append(sc.url(servers.ports) + f"?i=[1-{n}]")
    r = subprocess.run(args, capture_output=True, text=True)
    ttfb, total, bad = [], [], 0
    for line in r.stderr.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        if not parts[0].startswith("2"):
            bad += 1
            continue
        ttfb.append(float(parts[1]) * 1000)
        total.append(float(parts[2]) * 1000)
    return {"ttfb_p50_ms": pct(ttfb, 50), "ttfb_p99_ms": pct(ttfb, 99),
            "total_p50_ms": pct(total, 50), "total_p99_ms": pct(total, 99), "samples": len(ttfb), "failed": bad}


def pct(values, p):
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def median_of(runs):
    """Per-field median over rounds (numbers only)."""
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        out[k] = statistics.median(vals) if vals else runs[0][k]
    out["rounds"] = len(runs)
    return out


def metric_value(port, name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return None


def open_streams_rss(servers, target, proc_name, url_path, body, headers, n, metrics_port=None):
    """Peak RSS of `proc_name` while `n` slow streams are open through it."""
    pid = dict(servers.procs_by_name)[proc_name].pid
    idle = rss_kib(pid)
    peak = {"rss": idle, "streams": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_kib(pid))
            if metrics_port:
                v = metric_value(metrics_port, "apiproxy_inflight_streams")
                if v is not None:
                    peak["streams"] = max(peak["streams"], int(v))
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{servers.ports[target]}{url_path}"
    # Each stream lasts ~4 s (40 events, 100 ms apart); 7 s keep all n open
    # for a few seconds.
    raw = oha(url, body, headers, 7, n, extra=["-w"])
    stop.set()
    t.join()
    s = summarize(raw, 0.0, proc_name)
    return {"idle_rss_mib": idle / 1024, "peak_rss_mib": peak["rss"] / 1024,
            "per_stream_kib": (peak["rss"] - idle) / n, "streams_completed": s["ok"],
            "errors": s["errors"] + s["non_2xx"], "error_kinds": s["error_kinds"],
            "peak_open_streams_gauge": peak["streams"] or None}


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ver = lambda cmd: (subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines() or ["?"])[0]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "rustc": ver(["rustc", "--version"]),
        "oha": ver(["oha", "--version"]),
        "loadavg_at_start": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def f(v, nd=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}"


def ratio(a, b):
    return (a / b) if a and b else None


def render(res):
    m = res["machine"]
    L = []
    L.append(f"apiproxy load benchmark — {m['date']}")
    L.append(f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; {m['rustc']}; {m['oha']}; "
             f"load average at start {m['loadavg_at_start']:.2f}")
    L.append(f"rounds: {res['params']['rounds']} interleaved, {res['params']['seconds']:g} s each; "
             f"medians over rounds; CPU is the serving process's user+system time per completed request")
    L.append("")
    sat, fix = res.get("saturation", {}), res.get("fixed_rate", {})
    if sat:
        render_json(res, L, sat, fix)
    st = res.get("streams", {})
    if st:
        render_streams(res, L, st)
    if res.get("open_streams"):
        render_memory(res, L)
    L.append(f"### Headline")
    L.append("")
    if sat:
        d, fl, fd = sat["direct"], sat["floor"], fix["direct"]
        o, fo = sat["openai"], fix["openai"]
        L.append(f"- apiproxy (3) at saturation: {f(ratio(o['rps'], fl['rps']) * 100 if ratio(o['rps'], fl['rps']) else None, 1)}% "
                 f"of the floor's req/s (target ≥ 85%)")
        L.append(f"- p99 added over direct at {res['params']['rate']} req/s: {f(fo['p99_ms'] - fd['p99_ms'], 3)} ms "
                 f"(target < 1 ms)")
        sm = sat.get("store-mem")
        for key, what in (("store-redis", "Redis store"), ("store-cluster", "Redis Cluster store")):
            sr = sat.get(key)
            if sm and sr:
                L.append(f"- {what} vs embedded store (key with rpm+tpm: one admission script per request, the token "
                         f"settlement written in the background): req/s ratio {f(ratio(sr['rps'], sm['rps']))} "
                         f"(target ≥ 0.85), CPU µs/req {f(sr['cpu_us_per_req'], 1)} vs {f(sm['cpu_us_per_req'], 1)}, "
                         f"p50 at {res['params']['rate']} req/s {f(fix[key]['p50_ms'], 3)} vs "
                         f"{f(fix['store-mem']['p50_ms'], 3)} ms")
    if st:
        sf = st["floor-sse"]
        for key, what, goal in (("openai-sse", "SSE passthrough", 0.90), ("anthropic-sse", "SSE translated OpenAI→Anthropic", 0.75)):
            L.append(f"- {what}: {f(ratio(st[key]['rps'], sf['rps']))} of the floor's streams/s (goal ≥ {goal:.2f}); "
                     f"CPU µs/stream {f(st[key]['cpu_us_per_req'], 1)} vs the floor's {f(sf['cpu_us_per_req'], 1)}")
    mem = res.get("open_streams", {})
    if mem.get("apiproxy") and mem.get("floor"):
        L.append(f"- memory per open stream: {f(ratio(mem['apiproxy']['per_stream_kib'], mem['floor']['per_stream_kib']))} "
                 f"of the floor's (goal ≤ 1.05)")
    L.append(f"- wall time of the run: {res['wall_seconds']:.0f} s")
    return "\n".join(L) + "\n"


def render_json(res, L, sat, fix):
    d, fl = sat["direct"], sat["floor"]
    L.append(f"### A. Saturation, closed loop, {res['params']['conns']} connections")
    L.append("")
    L.append("| scenario | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req | req/s ÷ direct | req/s ÷ floor | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in res["labels"]["json"]:
        r = sat[key]
        L.append(f"| {label} | {f(r['rps'], 0)} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} | {f(r['p999_ms'], 3)} "
                 f"| {f(r['cpu_us_per_req'], 1)} | {f(ratio(r['rps'], d['rps']))} | {f(ratio(r['rps'], fl['rps']))} "
                 f"| {int(r['errors'] + r['non_2xx'])} |")
    L.append("")
    L.append(f"### B. Fixed rate {res['params']['rate']} req/s, open loop (oha -q, latency corrected)")
    L.append("")
    L.append("| scenario | achieved req/s | p50 ms | p99 ms | p99.9 ms | p99 added over direct ms | p99 added over floor ms "
             "| CPU µs/req | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    fd, ff = fix["direct"], fix["floor"]
    for key, label in res["labels"]["json"]:
        r = fix[key]
        add_d = r["p99_ms"] - fd["p99_ms"] if key != "direct" else None
        add_f = r["p99_ms"] - ff["p99_ms"] if key not in ("direct", "floor") else None
        L.append(f"| {label} | {f(r['rps'], 0)} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} | {f(r['p999_ms'], 3)} "
                 f"| {f(add_d, 3)} | {f(add_f, 3)} | {f(r['cpu_us_per_req'], 1)} | {int(r['errors'] + r['non_2xx'])} |")
    L.append("")


def render_streams(res, L, st):
    sd, sf = st["direct-sse"], st["floor-sse"]
    L.append(f"### C. SSE streams of 200 events")
    L.append("")
    L.append("TTFB and total: one stream at a time (curl timers, kept-alive connection); streams/s and p50/p99: "
             f"oha, {res['params']['conns']} connections, whole stream read.")
    L.append("")
    L.append("| scenario | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms | streams/s | p50 ms | p99 ms "
             "| p99.9 ms | CPU µs/stream | streams/s ÷ direct | ÷ floor | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key, label in res["labels"]["sse"]:
        r = st[key]
        L.append(f"| {label} | {f(r['ttfb_p50_ms'], 3)} | {f(r['ttfb_p99_ms'], 3)} | {f(r['total_p50_ms'], 3)} "
                 f"| {f(r['total_p99_ms'], 3)} | {f(r['rps'], 0)} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} "
                 f"| {f(r['p999_ms'], 3)} | {f(r['cpu_us_per_req'], 1)} | {f(ratio(r['rps'], sd['rps']))} "
                 f"| {f(ratio(r['rps'], sf['rps']))} | {int(r['errors'] + r['non_2xx'] + r['failed'])} |")
    L.append("")


def render_memory(res, L):
    L.append(f"### D. Memory with {res['params']['streams']} concurrent open streams (40 events, 100 ms apart)")
    L.append("")
    L.append("| process | idle RSS MiB | peak RSS MiB | KiB per open stream | streams completed | peak open streams "
             "(gauge) | errors |")
    L.append("|---|---:|---:|---:|---:|---:|---:|")
    for key, label in (("apiproxy", "apiproxy (SSE passthrough)"), ("floor", "floor (bare Pingora)")):
        r = res["open_streams"].get(key)
        if r:
            L.append(f"| {label} | {f(r['idle_rss_mib'], 1)} | {f(r['peak_rss_mib'], 1)} | {f(r['per_stream_kib'], 1)} "
                     f"| {f(r['streams_completed'])} | {f(r['peak_open_streams_gauge'])} | {f(r['errors'])} |")
    L.append("")


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release")
    for tool in ("oha", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (benches/run.sh installs oha)")
    t_start = time.time()
    work = tempfile.mkdtemp(prefix="apiproxy-bench-")
    RESULTS.mkdir(parents=True, exist_ok=True)
    sv = Servers(bin_dir, work)
    ports = {k: free_port() for k in ("mock", "mock_slow", "floor", "floor_slow", "apiproxy", "metrics",
                                      "apiproxy_redis", "metrics_redis", "redis", "apiproxy_cluster",
                                      "metrics_cluster")}
    res = {"machine": machine(),
           "params": {"seconds": SECONDS, "rounds": ROUNDS, "rate": RATE, "conns": CONNS, "streams": STREAMS,
                      "ttfb_samples": TTFB_SAMPLES}}
    try:
        b = sv.bin_dir
        sv.start("mock", [b / "bench-mock", "--listen", f"127.0.0.1:{ports['mock']}", "--threads", "2",
                          "--events", "200"], ports["mock"])
        sv.start("mock_slow", [b / "bench-mock", "--listen", f"127.0.0.1:{ports['mock_slow']}", "--threads", "1",
                               "--events", "40", "--interval-ms", "100"], ports["mock_slow"])
        sv.start("floor", [b / "bench-floor", "--listen", f"127.0.0.1:{ports['floor']}",
                           "--upstream", f"127.0.0.1:{ports['mock']}", "--threads", "2"], ports["floor"])
        conf = Path(work) / "apiproxy.yaml"
        conf.write_text(apiproxy_config(ports, work))
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        sv.start("apiproxy", [b / "apiproxy", "-c", str(conf)], ports["apiproxy"], env=env)
        sv.start("redis", ["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "",
                           "--appendonly", "no"], ports["redis"])
        conf_redis = Path(work) / "apiproxy-redis.yaml"
        conf_redis.write_text(apiproxy_config(ports, work, "apiproxy_redis", "metrics_redis",
                                              f"redis://127.0.0.1:{ports['redis']}/0"))
        sv.start("apiproxy_redis", [b / "apiproxy", "-c", str(conf_redis)], ports["apiproxy_redis"], env=env)
        cluster_url = start_cluster(sv, work)
        conf_cluster = Path(work) / "apiproxy-cluster.yaml"
        conf_cluster.write_text(apiproxy_config(ports, work, "apiproxy_cluster", "metrics_cluster", cluster_url))
        sv.start("apiproxy_cluster", [b / "apiproxy", "-c", str(conf_cluster)], ports["apiproxy_cluster"], env=env)
        sv.ports["metrics"] = ports["metrics"]
        sv.procs_by_name = [(n, p) for n, p in sv.procs]
        sc = scenarios()
        res["labels"] = {g: [(s.key, s.label) for s in sc[g]] for g in sc}

        json_sc = sc["json"] if "json" in ONLY else []
        sse_sc = sc["sse"] if "sse" in ONLY else []
        log("warm-up")
        for s in json_sc + sse_sc:
            run_oha(s, sv, 1, CONNS)

        runs = {s.key: [] for s in json_sc + sse_sc}
        fixed = {s.key: [] for s in json_sc}
        for r in range(ROUNDS):
            if json_sc:
                log(f"round {r + 1}/{ROUNDS}: saturation")
                for s in json_sc:
                    runs[s.key].append(run_oha(s, sv, SECONDS, CONNS))
                log(f"round {r + 1}/{ROUNDS}: fixed rate {RATE}/s")
                for s in json_sc:
                    fixed[s.key].append(run_oha(s, sv, SECONDS, CONNS, rate=RATE))
            if sse_sc:
                log(f"round {r + 1}/{ROUNDS}: streams")
                for s in sse_sc:
                    row = run_oha(s, sv, SECONDS, CONNS)
                    row.update(curl_ttfb(s, sv, TTFB_SAMPLES, work))
                    runs[s.key].append(row)
        res["saturation"] = {s.key: median_of(runs[s.key]) for s in json_sc}
        res["fixed_rate"] = {s.key: median_of(fixed[s.key]) for s in json_sc}
        res["streams"] = {s.key: median_of(runs[s.key]) for s in sse_sc}
        res["rounds_raw"] = {"saturation": runs, "fixed_rate": fixed}

        res["open_streams"] = {}
        if STREAMS > 0 and "memory" in ONLY:
            log(f"{STREAMS} open streams through apiproxy")
            res["open_streams"]["apiproxy"] = open_streams_rss(
                sv, "apiproxy", "apiproxy", "/v1/chat/completions", chat_body("slow-model", True),
                ["Authorization: Bearer " + CLIENT_KEY], STREAMS, metrics_port=ports["metrics"])
            sv.start("floor_slow", [b / "bench-floor", "--listen", f"127.0.0.1:{ports['floor_slow']}",
                                    "--upstream", f"127.0.0.1:{ports['mock_slow']}", "--threads", "2"],
                     ports["floor_slow"])
            sv.procs_by_name = [(n, p) for n, p in sv.procs]
            log(f"{STREAMS} open streams through the floor")
            res["open_streams"]["floor"] = open_streams_rss(
                sv, "floor_slow", "floor_slow", "/v1/chat/completions", chat_body("slow-model", True), [], STREAMS)

        if PROFILE and shutil.which("perf"):
            target = {s.key: s for s in sc["json"] + sc["sse"]}.get(PROFILE_SCENARIO)
            if target is None:
                raise SystemExit(f"BENCH_PROFILE_SCENARIO: no scenario {PROFILE_SCENARIO}")
            profile(sv, target, work)
    finally:
        sv.stop()
    res["wall_seconds"] = time.time() - t_start
    table = render(res)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    names = ("latest", f"run-{stamp}") if ONLY >= {"json", "sse", "memory"} else (f"partial-{stamp}",)
    for name in names:
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(table)
    log(f"written to {RESULTS}/{names[-1]}.md and .json (logs in {work})")


def start_cluster(sv, work):
    """Three cluster-enabled redis-servers joined by `redis-cli --cluster create`
    (no replicas); returns the store URL naming all three."""
    nodes = []
    for i in range(3):
        port, bus = free_port(), free_port()
        sv.start(f"redis_cluster_{i}", ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                        "--appendonly", "no", "--dir", work, "--cluster-enabled", "yes",
                                        "--cluster-config-file", f"{work}/nodes-{i}.conf", "--cluster-port", str(bus)],
                 port)
        nodes.append(f"127.0.0.1:{port}")
    subprocess.run(["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                   check=True, capture_output=True, text=True)
    deadline = time.time() + 20
    while True:
        states = [subprocess.run(["redis-cli", "-p", n.split(":")[1], "cluster", "info"], capture_output=True,
                                 text=True).stdout for n in nodes]
        if all("cluster_state:ok" in s for s in states):
            break
        if time.time() > deadline:
            raise RuntimeError("the bench's Redis Cluster did not become ok")
        time.sleep(0.1)
    return "redis+cluster://" + ",".join(nodes)


def profile(sv, sc, work):
    """perf record of apiproxy during one saturation run."""
    pid = dict(sv.procs_by_name)["apiproxy"].pid
    data = Path(work) / "perf.data"
    rec = subprocess.Popen(["perf", "record", "-F", "999", "-g", "--call-graph", "dwarf,16384", "-p", str(pid),
                            "-o", str(data), "--", "sleep", str(SECONDS)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    oha(sc.url(sv.ports), sc.body, sc.headers, SECONDS, CONNS)
    rec.wait()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for kind, args in (("flat", ["--no-children"]), ("children", ["--children"])):
        out = RESULTS / f"perf-{stamp}-{sc.key}-{kind}.txt"
        with open(out, "w") as fh:
            subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-demangle", "-g", "none",
                            "--percent-limit", "0.5", *args], stdout=fh, stderr=subprocess.DEVNULL)
        log(f"profile: {out}")


if __name__ == "__main__":
    main()
