#!/usr/bin/env python3
"""apiproxy load harness (run through `make bench` / benches/run.sh).

Starts, on loopback only, a fast mock provider (bench-mock), the bare
Pingora passthrough (bench-floor) and apiproxy (release build), then drives
them with oha in interleaved rounds:

  A. saturation, closed loop, 32 connections: direct, floor, apiproxy
     (OpenAI, Anthropic->OpenAI translation, logical model over two upstreams)
  B. fixed rate, open loop (oha -q, latency corrected): the same scenarios
  C. 200-event SSE streams: direct, floor, nginx as a streaming proxy
     (proxy_buffering off: the fair baseline for streams, see
     `streaming_proxy`), apiproxy passthrough, apiproxy translated; time to
     first byte and total time from curl, one stream at a time, and
     streams/s with latency from oha at 32 connections
  D. peak RSS of apiproxy (and of the floor) with 1,000 streams open at once

and prints a Markdown table, written with the raw figures to
benches/results/ (latest.md, latest.json and a time-stamped copy).

Nothing here asserts a number: the harness measures and reports.
Environment knobs: BENCH_SECONDS (per measurement, default 5), BENCH_ROUNDS
(default 3), BENCH_FEATURE_ROUNDS (section H's rounds, default 8: its goals
are 3% wide, narrower than three rounds can tell apart), BENCH_RATE (default 2000), BENCH_CONNS (default 32),
BENCH_STREAMS (default 1000), BENCH_PROFILE=1 (perf record of the floor,
apiproxy and apiproxy on each store during one extra saturation run each;
writes benches/results/perf-*.txt).
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
FEATURE_ROUNDS = int(os.environ.get("BENCH_FEATURE_ROUNDS", str(max(ROUNDS, 8))))
RATE = int(os.environ.get("BENCH_RATE", "2000"))
CONNS = int(os.environ.get("BENCH_CONNS", "32"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "1000"))
TTFB_SAMPLES = int(os.environ.get("BENCH_TTFB_SAMPLES", "200"))
# Section G: sequential requests (one connection, no queueing) per scenario and round.
SEQ_SECONDS = float(os.environ.get("BENCH_SEQ_SECONDS", "5"))
# Section D is run this many times (the memory per stream moves between runs: all are reported).
STREAM_RUNS = int(os.environ.get("BENCH_STREAM_RUNS", "3"))
PROFILE = os.environ.get("BENCH_PROFILE", "") not in ("", "0")
# Which parts run (comma list; default all, also `all` or `load`): saturation, fixed, sequential, sse, open-streams,
# big-bodies, peers, features, routing (run.sh sends `upgrade` to benches/upgrade.py instead).
# Peers also need PEERS=1 (run.sh then installs them). BENCH_SCENARIOS narrows the
# JSON and SSE scenarios to those keys (direct and floor always run: the ratios need them).
ONLY = {p.strip() for p in os.environ.get("BENCH_ONLY", "").split(",") if p.strip()} - {"all", "load"}
SCENARIOS = {p.strip() for p in os.environ.get("BENCH_SCENARIOS", "").split(",") if p.strip()}
PEERS = os.environ.get("PEERS", "") not in ("", "0")
BIG_BODY_MIB = int(os.environ.get("BENCH_BIG_BODY_MIB", "8"))
BIG_BODY_CLIENTS = int(os.environ.get("BENCH_BIG_BODY_CLIENTS", "16"))
CLIENT_KEY = "sk-bench-client-key-0001"
# A key with rpm and tpm limits: every request through it counts in the store
# (scenarios 6a/6b/6c compare the embedded store with one Redis and with a
# three-master Redis Cluster).
LIMITED_KEY = "sk-bench-limited-key-0001"
# A key with rpm+tpm and a budget (scenarios 6d/6e: what a budget costs per request).
BUDGETED_KEY = "sk-bench-budgeted-key-0001"
TICK = os.sysconf("SC_CLK_TCK")


def part(name):
    """Whether this part of the harness runs (BENCH_ONLY)."""
    return not ONLY or name in ONLY


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

    def start(self, name, args, port, env=None, timeout=20.0):
        out = open(self.workdir / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.workdir)
        self.procs.append((name, p))
        wait_port(port, p, name, timeout)
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


def apiproxy_config(ports, workdir, name="apiproxy", metrics="metrics", redis_url=None, collect=True,
                    filters_dir=None, capture=False):
    store = f"store:\n  redis_url: {redis_url}\n" if redis_url else ""
    # The console's collection (aggregates, request records) is on by default;
    # one instance runs without it to measure what it costs (scenario 3c).
    console = "" if collect else "console:\n  collect: false\n"
    # Without a filters_dir of its own, an instance has no rules (the
    # default directory beside the scratch config does not exist).
    filters = f"filters_dir: {filters_dir}\n" if filters_dir else ""
    capture_line = "  capture_bodies: true\n" if capture else ""
    return f"""# written by benches/harness.py
{store}{console}{filters}server:
  listen: 127.0.0.1:{ports[name]}
  metrics_listen: 127.0.0.1:{ports[metrics]}
  threads: 2
  pid_file: {workdir}/{name}.pid
  upgrade_sock: {workdir}/{name}-upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
log:
  level: info
{capture_line}auth:
  keys:
    - {{ name: bench, key: {CLIENT_KEY} }}
    - {{ name: limited, key: {LIMITED_KEY}, rpm: 1000000000, tpm: 1000000000000 }}
    - {{ name: budgeted, key: {BUDGETED_KEY}, rpm: 1000000000, tpm: 1000000000000, budget_usd: 1000000000 }}
  admin_keys: [sk-bench-admin-key-0001]
providers:
  - {{ id: mock, kind: openai, base_url: "http://127.0.0.1:{ports['mock']}", api_keys: [sk-up-1], models: [bench-model], pricing: {{ bench-model: {{ input: 0.01, output: 0.01 }} }} }}
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
    budgeted = ["Authorization: Bearer " + BUDGETED_KEY]
    ant = ["x-api-key: " + CLIENT_KEY, "anthropic-version: 2023-06-01"]
    chat = "/v1/chat/completions"
    return {
        "json": [
            Scenario("direct", "1 direct (oha → mock)", "mock", chat, chat_body("bench-model"), auth, "mock"),
            Scenario("floor", "2 floor (bare Pingora proxy)", "floor", chat, chat_body("bench-model"), auth, "floor"),
            Scenario("openai", "3 apiproxy OpenAI→OpenAI, auth", "apiproxy", chat, chat_body("bench-model"), auth, "apiproxy"),
            Scenario("nocollect", "3c apiproxy OpenAI→OpenAI, auth, console collection off", "apiproxy_nocollect",
                     chat, chat_body("bench-model"), auth, "apiproxy_nocollect"),
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
            Scenario("budget-mem", "6d apiproxy, key with rpm+tpm+budget, embedded store", "apiproxy", chat,
                     chat_body("bench-model"), budgeted, "apiproxy"),
            Scenario("budget-redis", "6e apiproxy, key with rpm+tpm+budget, Redis store", "apiproxy_redis", chat,
                     chat_body("bench-model"), budgeted, "apiproxy_redis"),
        ],
        "sse": [
            Scenario("direct-sse", "1 direct SSE", "mock", chat, chat_body("bench-model", True), auth, "mock"),
            Scenario("floor-sse", "2 floor SSE", "floor", chat, chat_body("bench-model", True), auth, "floor"),
            Scenario("nginx-sse", "2b nginx SSE (proxy, proxy_buffering off)", "nginx", chat,
                     chat_body("bench-model", True), auth, "nginx"),
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
    # Only 2xx answers count: a gateway answering errors fast must not look fast.
    total = s.get("total")
    return {
        "rps": ok / total if total else s.get("requestsPerSec"),
        "rps_all": s.get("requestsPerSec"),
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


def machine_busy():
    """(busy, total) jiffies of every CPU since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return sum(v) - idle, sum(v)


QUIET = float(os.environ.get("BENCH_QUIET", "0.1"))


def wait_quiet(limit=3.0, window=0.2):
    """Waits (at most `limit` s) until the machine is idle but for QUIET of
    its CPUs over `window`: a scenario then does not start while the one
    before still works off what it queued (a Redis Cluster gateway's
    deferred writes, say), which would be billed to it as slowness."""
    start = time.time()
    while True:
        b0, t0 = machine_busy()
        time.sleep(window)
        b1, t1 = machine_busy()
        busy = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        if busy <= QUIET or time.time() >= start + limit:
            if time.time() - start > 1.0:
                log(f"waited {time.time() - start:.1f} s for a quiet machine (last {busy:.0%} busy)")
            return


def run_oha(sc, servers, seconds, conns, rate=None):
    wait_quiet()
    pid = dict(servers.procs_by_name)[sc.proc].pid
    # nginx serves from worker processes: its CPU is its process tree's.
    cpu = tree_cpu_seconds if sc.proc in TREE_CPU else cpu_seconds
    c0 = cpu(pid)
    raw = oha(sc.url(servers.ports), sc.body, sc.headers, seconds, conns, rate)
    c1 = cpu(pid)
    return summarize(raw, c1 - c0, sc.proc)


# Processes whose work happens in child processes.
TREE_CPU = {"nginx", "litellm", "portkey"}


def nginx_binary():
    """nginx from BENCH_NGINX, the PATH, or the copy run.sh unpacks (from
    Debian's package, without installing the service) into the cache."""
    for c in (os.environ.get("BENCH_NGINX"), shutil.which("nginx"),
              str(Path.home() / ".cache" / "apiproxy-bench" / "nginx" / "usr" / "sbin" / "nginx")):
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return None


def streaming_proxy(sv, ports, work):
    """nginx as a plain reverse proxy configured for streaming (buffering
    off, kept-alive upstream connections, 2 workers like the others' 2
    threads): the baseline SSE ratios are read against. The bare Pingora
    floor forwards each chunk of the upstream's chunked body as its own
    write, so it serves fewer streams/s than apiproxy, which writes what it
    has read at once: against it an SSE ratio says nothing (issue 21)."""
    exe = nginx_binary()
    if not exe:
        log("nginx is missing (run.sh unpacks it into ~/.cache/apiproxy-bench/nginx): no nginx SSE baseline")
        return False
    w = Path(work) / "nginx"
    w.mkdir(exist_ok=True)
    conf = w / "nginx.conf"
    temps = "\n".join(f"  {k}_temp_path {w}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf.write_text(f"""# written by benches/harness.py
daemon off;
worker_processes 2;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temps}
  upstream mock {{ server 127.0.0.1:{ports['mock']}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{ports['nginx']} backlog=4096;
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
""")
    sv.start("nginx", [exe, "-p", str(w), "-e", str(w / "error.log"), "-c", str(conf)], ports["nginx"])
    return True


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
        "oha": ver(["oha", "--version"]) if shutil.which("oha") else "oha absent",
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


# ---------------------------------------------------------------------------
# E. Big request bodies: peak RSS while many large bodies are in flight.


def big_body(size):
    """An OpenAI chat / Anthropic Messages body of about `size` bytes made of
    small JSON values (a long conversation of short turns): the shape that
    costs most as a decoded tree."""
    head = '{"model":"bench-model","max_tokens":64,"messages":['
    turns, n, total = [], 0, len(head) + 2
    while total < size:
        t = json.dumps({"role": "user", "content": f"hello {n:06d}"}, separators=(",", ":"))
        turns.append(t)
        total += len(t) + 1
        n += 1
    return (head + ",".join(turns) + "]}").encode()


def stop_one(sv, name):
    for n, p in sv.procs:
        if n == name and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def post(port, path, body, headers, timeout=300):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def big_bodies(sv, ports, work, env):
    """For each case a fresh apiproxy: BIG_BODY_CLIENTS clients each send a
    BIG_BODY_MIB MiB body at once, three times over; the peak RSS is sampled
    every 10 ms and set against the bytes in flight."""
    size = BIG_BODY_MIB * 1024 * 1024
    body = big_body(size)
    rounds = int(os.environ.get("BENCH_BIG_BODY_ROUNDS", "3"))
    cases = [
        ("passthrough", "OpenAI→OpenAI (same format: the body's bytes spliced)", "/v1/chat/completions",
         {"Authorization": "Bearer " + CLIENT_KEY}),
        ("translated", "Anthropic→OpenAI (translated)", "/v1/messages",
         {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"}),
        ("rules", "OpenAI→OpenAI with payload rules and body capture on", "/v1/chat/completions",
         {"Authorization": "Bearer " + CLIENT_KEY}),
    ]
    only = {c for c in os.environ.get("BENCH_BIG_BODY_CASES", "").split(",") if c}
    cases = [c for c in cases if not only or c[0] in only]
    out = {"body_bytes": len(body), "clients": BIG_BODY_CLIENTS, "rounds": rounds, "cases": {}}
    for key, label, path, headers in cases:
        name, metrics = f"apiproxy_big_{key}", f"metrics_big_{key}"
        ports[name], ports[metrics] = free_port(), free_port()
        conf = Path(work) / f"{name}.yaml"
        extra = {}
        if key == "rules":
            # A default, an override reaching into the turns and a removal,
            # on every request; capture keeps (redacted) the body's start.
            rules = Path(work) / "big-rules"
            rules.mkdir(exist_ok=True)
            (rules / "payload.yaml").write_text(
                "payload:\n"
                "  default:\n    - models: [\"*\"]\n      params: { temperature: 0.2, \"metadata.bench\": big }\n"
                "  override:\n    - models: [\"*\"]\n      params: { \"messages.0.content\": overridden, max_tokens: 32 }\n"
                "  filter:\n    - models: [\"*\"]\n      params: [top_p]\n")
            extra = {"filters_dir": str(rules), "capture": True}
        conf.write_text(apiproxy_config(ports, work, name, metrics, **extra))
        p = sv.start(name, [sv.bin_dir / "apiproxy", "-c", str(conf)], ports[name], env=env)
        hdrs = dict(headers, **{"Content-Type": "application/json"})
        post(ports[name], path, chat_body("bench-model").encode(), hdrs)
        time.sleep(0.3)
        idle = rss_kib(p.pid)
        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_kib(p.pid))
                time.sleep(0.01)

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        statuses, secs = [], []
        for _ in range(rounds):
            start = time.time()
            results = [None] * BIG_BODY_CLIENTS

            def client(i):
                try:
                    results[i] = post(ports[name], path, body, hdrs)
                except OSError as e:
                    results[i] = str(e)

            ths = [threading.Thread(target=client, args=(i,)) for i in range(BIG_BODY_CLIENTS)]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            secs.append(time.time() - start)
            statuses += results
        time.sleep(0.2)
        stop.set()
        t.join()
        stop_one(sv, name)
        in_flight = len(body) * BIG_BODY_CLIENTS
        ok = sum(1 for x in statuses if x == 200)
        out["cases"][key] = {
            "label": label, "idle_rss_mib": idle / 1024, "peak_rss_mib": peak[0] / 1024,
            "in_flight_mib": in_flight / 2**20,
            "peak_over_in_flight": peak[0] * 1024 / in_flight,
            "growth_over_in_flight": (peak[0] - idle) * 1024 / in_flight,
            "ok": ok, "failed": len(statuses) - ok,
            "failures": sorted({str(x) for x in statuses if x != 200}),
            "round_seconds": statistics.median(secs),
        }
        log(f"big bodies, {key}: peak {peak[0] / 1024:.0f} MiB for {in_flight / 2**20:.0f} MiB in flight")
    return out


def render_big_bodies(bb):
    if not bb:
        return []
    L = [f"### E. Memory with {bb['clients']} concurrent {bb['body_bytes'] / 2**20:.0f} MiB request bodies",
         "",
         f"A fresh apiproxy per case; {bb['clients']} clients each POST a body of short chat turns at once, "
         f"{bb['rounds']} times; RSS sampled every 10 ms. Goal (issue 8): peak under 4× the bytes in flight.",
         "",
         "| case | idle RSS MiB | peak RSS MiB | bytes in flight MiB | peak ÷ in flight | (peak − idle) ÷ in flight "
         "| s per round | ok | failed |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, r in bb["cases"].items():
        L.append(f"| {r['label']} | {f(r['idle_rss_mib'], 1)} | {f(r['peak_rss_mib'], 1)} | {f(r['in_flight_mib'], 0)} "
                 f"| {f(r['peak_over_in_flight'])} | {f(r['growth_over_in_flight'])} | {f(r['round_seconds'], 2)} "
                 f"| {r['ok']} | {r['failed']} |")
    L.append("")
    return L


# ---------------------------------------------------------------------------
# F. Peers: another gateway against the same mock in the same run.

LITELLM_VERSION = os.environ.get("LITELLM_VERSION", "1.106.12")


def tree_cpu_seconds(pid):
    """CPU of a process and all its descendants (LiteLLM runs worker processes)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
        todo += children.get(p, [])
    return total


def litellm_config(ports):
    return f"""# written by benches/harness.py
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: http://127.0.0.1:{ports['mock']}/v1
      api_key: sk-up-1
general_settings:
  master_key: {CLIENT_KEY}
litellm_settings:
  telemetry: false
  turn_off_message_logging: true
"""


PORTKEY_VERSION = os.environ.get("PORTKEY_VERSION", "1.15.2")


def start_litellm(sv, ports, work):
    """LiteLLM's proxy (installed by run.sh into a venv) on the same mock;
    None when it is not installed."""
    venv = Path(os.environ.get("BENCH_LITELLM_VENV",
                               Path.home() / ".cache" / "apiproxy-bench" / f"litellm-{LITELLM_VERSION}"))
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        log(f"peers: {exe} is missing (run.sh installs it with PEERS=1); skipped")
        return None
    ports["litellm"] = free_port()
    conf = Path(work) / "litellm.yaml"
    conf.write_text(litellm_config(ports))
    penv = dict(os.environ)
    # Offline: the cost map from the package, no telemetry, no database.
    penv.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR",
                 "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True"})
    penv.pop("DATABASE_URL", None)
    workers = os.environ.get("BENCH_LITELLM_WORKERS", "2")
    p = sv.start("litellm", [str(exe), "--config", str(conf), "--host", "127.0.0.1", "--port", str(ports["litellm"]),
                             "--num_workers", workers], ports["litellm"], env=penv,
                 # Its imports alone take half a minute on a busy 2-core machine.
                 timeout=float(os.environ.get("BENCH_LITELLM_START_SECONDS", "180")))
    return p, f"LiteLLM {LITELLM_VERSION} proxy ({workers} worker processes), OpenAI→OpenAI, master key", \
        "/v1/chat/completions", ["Authorization: Bearer " + CLIENT_KEY]


def start_portkey(sv, ports, work):
    """Portkey's open-source gateway (npm @portkey-ai/gateway, installed by
    run.sh) on the same mock, routed there by its own headers; one node
    process, as its start script runs it. Preloaded so that it listens on
    127.0.0.1 only (its script listens on every interface). None when it is
    not installed."""
    home = Path(os.environ.get("BENCH_PORTKEY_DIR",
                               Path.home() / ".cache" / "apiproxy-bench" / f"portkey-{PORTKEY_VERSION}"))
    script = home / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    node = shutil.which("node")
    if not script.exists() or not node:
        log(f"peers: {script} or node is missing (run.sh installs it with PEERS=1); skipped")
        return None
    ports["portkey"] = free_port()
    penv = dict(os.environ)
    penv["NODE_ENV"] = "production"
    preload = ROOT / "benches" / "peers" / "listen-loopback.cjs"
    p = sv.start("portkey", [node, "-r", str(preload), str(script), f"--port={ports['portkey']}", "--headless"],
                 ports["portkey"], env=penv, timeout=60.0)
    headers = ["Authorization: Bearer sk-up-1", "x-portkey-provider: openai",
               f"x-portkey-custom-host: http://127.0.0.1:{ports['mock']}/v1"]
    return p, f"Portkey gateway {PORTKEY_VERSION} (node), OpenAI→OpenAI", "/v1/chat/completions", headers


# The peers: name, how to start it, the goal of apiproxy's req/s ÷ its req/s (issue 21).
PEER_GATEWAYS = (("litellm", start_litellm, 100), ("portkey", start_portkey, 25))


def peers(sv, ports, work, json_scenarios):
    """Each installed peer gateway on the same mock, measured interleaved with
    apiproxy's scenario 3, same body, same oha settings."""
    ours = next((s for s in json_scenarios if s.key == "openai"), scenarios()["json"][2])
    started = []
    for name, start, goal in PEER_GATEWAYS:
        try:
            got = start(sv, ports, work)
        except SystemExit as e:
            # A peer that does not start costs its row, not the run.
            log(f"peers: {name} did not start: {e}; skipped")
            continue
        if got:
            p, label, path, headers = got
            started.append((name, p, goal, Scenario(name, label, name, path, ours.body, headers, name)))
    if not started:
        return {"error": "no peer gateway is installed (PEERS=1 with benches/run.sh installs them)"}
    sv.procs_by_name = [(n, q) for n, q in sv.procs]
    # Peers answer their first requests slowly (imports, caches, JIT): warm them.
    for _, _, _, peer in started:
        for _ in range(3):
            try:
                oha(peer.url(sv.ports), peer.body, peer.headers, 2, 4)
            except RuntimeError:
                time.sleep(1)
    rows = {"openai": []} | {name: [] for name, *_ in started}
    for r in range(ROUNDS):
        log(f"peers round {r + 1}/{ROUNDS}")
        rows["openai"].append(run_oha(ours, sv, SECONDS, CONNS))
        for name, _, _, peer in started:
            rows[name].append(run_oha(peer, sv, SECONDS, CONNS))
    return {"label_ours": dict(scenarios_labels())["openai"], "openai": median_of(rows["openai"]),
            "peers": [{"name": name, "label": peer.label, "goal": goal, **median_of(rows[name])}
                      for name, _, goal, peer in started],
            "raw": rows}


def scenarios_labels():
    return [(s.key, s.label) for s in scenarios()["json"]]


def render_peers(res):
    pr = res.get("peers")
    if not pr:
        return []
    if "error" in pr:
        return ["### F. Peers", "", f"Not measured: {pr['error']}.", ""]
    o = pr["openai"]
    L = [f"### F. Peers at saturation, {res['params']['conns']} connections, same mock, interleaved rounds",
         "",
         "A peer's CPU is the sum over its process tree (LiteLLM runs worker processes).",
         "",
         "| gateway | req/s | p50 ms | p99 ms | CPU µs/req | errors |",
         "|---|---:|---:|---:|---:|---:|"]
    for r, label in [(o, pr["label_ours"])] + [(q, q["label"]) for q in pr["peers"]]:
        L.append(f"| {label} | {f(r['rps'], 0)} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} "
                 f"| {f(r['cpu_us_per_req'], 1)} | {int(r['errors'] + r['non_2xx'])} |")
    L.append("")
    for q in pr["peers"]:
        L.append(f"apiproxy ÷ {q['name']} req/s: {f(ratio(o['rps'], q['rps']), 1)} (goal ≥ {q['goal']})")
    L.append("")
    return L


# Section G's scenarios: direct and the floor (the baselines), then apiproxy.
SEQUENTIAL = ("direct", "floor", "openai", "anthropic")


def sequential_added(seq):
    """Per scenario: the medians over rounds of p50/p99 with one connection,
    and what each adds over direct, round by round (then the median), so a
    slow round moves both sides of a difference."""
    out = {}
    direct = seq.get("direct") or []
    for key, rows in seq.items():
        if not rows:
            continue
        row = median_of(rows)
        for q in ("p50_ms", "p99_ms"):
            diffs = [(r[q] - d[q]) * 1000.0 for r, d in zip(rows, direct)
                     if r.get(q) is not None and d.get(q) is not None]
            row[f"added_{q[:3]}_us"] = statistics.median(diffs) if diffs and key != "direct" else None
        out[key] = row
    return out


def render_sequential(res):
    sq = res.get("sequential")
    if not sq:
        return []
    L = [f"### G. Sequential requests, one connection ({SEQ_SECONDS:g} s per scenario and round)", "",
         "What a request pays with no queueing: the added columns are each round's percentile minus direct's "
         "in the same round, median over rounds.", "",
         "| scenario | req/s | p50 µs | p99 µs | p50 added over direct µs | p99 added over direct µs | CPU µs/req | errors |",
         "|---|---:|---:|---:|---:|---:|---:|---:|"]
    labels = dict(res["labels"]["json"])
    for key in SEQUENTIAL:
        r = sq.get(key)
        if r:
            L.append(f"| {labels.get(key, key)} | {f(r['rps'], 0)} | {f(r['p50_ms'] * 1000, 0)} | "
                     f"{f(r['p99_ms'] * 1000, 0)} | {f(r['added_p50_us'], 0)} | {f(r['added_p99_us'], 0)} | "
                     f"{f(r['cpu_us_per_req'], 1)} | {int(r['errors'] + r['non_2xx'])} |")
    L.append("")
    return L


def render_open_stream_runs(res):
    runs = res.get("open_streams_runs") or []
    if len(runs) < 2:
        return []
    L = ["Every run of D (the memory per stream moves between runs):", "",
         "| run | apiproxy KiB/stream | floor KiB/stream | ÷ floor |", "|---|---:|---:|---:|"]
    for i, one in enumerate(runs, 1):
        a, fl = one["apiproxy"]["per_stream_kib"], one["floor"]["per_stream_kib"]
        L.append(f"| {i} | {f(a, 1)} | {f(fl, 1)} | {f(ratio(a, fl))} |")
    L.append("")
    return L


# Section H: (column, benches/ab.py variants, the column it is compared with).
FEATURES = (("plain", "", None), ("trace", "trace", "plain"), ("trace05", "trace05", "plain"),
            ("logical", "logical", None), ("cachemiss", "cachemiss", "logical"), ("cachehit", "cachehit", None))


def features(bin_dir, work):
    """Section H (issue 25): every request traced (`sample_ratio: 1`, to an
    OTLP sink on loopback) and one in twenty traced (`sample_ratio: 0.05`)
    against the same gateway without tracing, every
    request a cache miss against the same logical model without the cache,
    and cache hits against the floor: benches/ab.py's interleaved rounds, one
    gateway per column, each ratio the median of the round-by-round ratios;
    then the same columns' instructions per request (benches/instructions.py)."""
    out = Path(work) / "features.json"
    cols = [f"{n}={bin_dir}" + (f":{v}" if v else "") for n, v, _ in FEATURES]
    # Each column with a base is also loaded together with it (AB_PAIRS).
    env = dict(os.environ, AB_JSON=str(out), AB_PAIRS=",".join(f"{n}:{base}" for n, _, base in FEATURES if base))
    env.pop("AB_BASE", None)
    env.pop("AB_PAIRS_ONLY", None)
    env.pop("AB_MODEL", None)
    ab = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "ab.py"), str(FEATURE_ROUNDS), str(SECONDS)]
                        + cols, env=env, capture_output=True, text=True)
    if ab.returncode != 0 or not out.exists():
        return {"error": (ab.stderr or ab.stdout)[-2000:]}
    raw = json.loads(out.read_text())
    rounds = raw["rounds"]
    res = {"columns": {}, "dropped_spans": raw.get("dropped_spans", {})}
    for n, v, base in FEATURES:
        r = rounds[f"apiproxy_{n}"]
        row = {"rps": statistics.median(x[0] for x in r), "cpu_us_per_req": statistics.median(x[1] for x in r),
               "ok": sum(x[2] for x in r), "non_2xx": sum(x[3] for x in r),
               "of_floor": statistics.median(x[0] / y[0] for x, y in zip(r, rounds["floor"]))}
        if base:
            b = rounds[f"apiproxy_{base}"]
            row["base"] = base
            row["rps_of_base"] = statistics.median(x[0] / y[0] for x, y in zip(r, b))
            row["cpu_of_base"] = statistics.median(x[1] / y[1] for x, y in zip(r, b))
            pr = raw.get("paired", {}).get(f"apiproxy_{n}") or []
            if pr:
                row["paired_rps_of_base"] = statistics.median(x[0] for x in pr)
                row["paired_cpu_of_base"] = statistics.median(x[1] for x in pr)
                row["paired_cpu_rounds"] = [x[1] for x in pr]
                row["non_2xx"] += sum(x[3] for x in pr)
        res["columns"][n] = row
    fl = rounds["floor"]
    res["floor"] = {"rps": statistics.median(x[0] for x in fl), "cpu_us_per_req": statistics.median(x[1] for x in fl)}
    res["instructions"] = instructions(bin_dir, work)
    return res


# Section H's instruction counts: the requests counted per column (each of
# FEATURES' columns but cachehit; one with a base is divided by it).
INSTR_REQUESTS = 2000


def instructions(bin_dir, work):
    """The same columns' instructions per request, counted under callgrind
    (benches/instructions.py): a figure the machine's noise does not move.
    None without valgrind."""
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        return None
    out = Path(work) / "instructions.json"
    cols = [f"{n}={bin_dir}" + (f":{v}" if v else "") for n, v, base in FEATURES if n != "cachehit"]
    r = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "instructions.py"), str(INSTR_REQUESTS)]
                       + cols, env=dict(os.environ, INSTR_JSON=str(out)), capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        return {"error": (r.stderr or r.stdout)[-1000:]}
    return json.loads(out.read_text())


def render_features(res):
    ft = res.get("features")
    if not ft:
        return []
    L = ["## H. Tracing and the response cache (issue 25)", ""]
    if "error" in ft:
        return L + ["benches/ab.py failed: " + ft["error"].replace("\n", " "), ""]
    L += [f"benches/ab.py's interleaved rounds ({FEATURE_ROUNDS} of {f(SECONDS, 0)} s, every other one in the reverse",
          "order), one gateway per column on the harness's mock; each ratio is the",
          "median over rounds of the round's ratio. `trace`: `telemetry.otlp` with `sample_ratio: 1` to an OTLP/HTTP",
          "sink on loopback (every request traced and exported); `trace05`: the same with `sample_ratio: 0.05`",
          "(one request in twenty traced, every other one carrying its trace context and `traceparent` unsampled:",
          "what a production setting costs; issue 25's goal is `trace`'s); `cachemiss`: the logical model with",
          "`cache_ttl_seconds` and a `cache.max_entry_bytes` no answer fits (every request looked up, recorded and",
          "not stored); `cachehit`: every request after the first answered from the cache.",
          f"Then {FEATURE_ROUNDS} paired rounds: a column and the one it is compared with loaded at the same time",
          "(16 connections each), their CPU per request and req/s compared within the round. Both share the",
          "same seconds of the machine, so its slow patches hit both: the paired CPU ratio is the steadier",
          "measure of a feature's cost (two identical gateways read 0.98–1.01 round by round).", "",
          "| column | req/s | ÷ floor | CPU µs/req | compared with | req/s ÷ it | CPU ÷ it | loaded together: req/s ÷ it | CPU ÷ it |",
          "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for n, _, _ in FEATURES:
        c = ft["columns"][n]
        L.append(f"| {n} | {f(c['rps'], 0)} | {f(c['of_floor'])} | {f(c['cpu_us_per_req'], 1)} | {c.get('base', '')} | "
                 f"{f(c.get('rps_of_base'), 3)} | {f(c.get('cpu_of_base'), 3)} | {f(c.get('paired_rps_of_base'), 3)} | "
                 f"{f(c.get('paired_cpu_of_base'), 3)} |")
    for n, _, _ in FEATURES:
        rr = ft["columns"][n].get("paired_cpu_rounds")
        if rr:
            L.append(f"\nPaired CPU ÷ {ft['columns'][n]['base']}, round by round, {n}: " + ", ".join(f(x, 3) for x in rr) + ".")
    dropped = ft.get("dropped_spans", {})
    L += ["", f"Spans dropped during the run: {dropped.get('trace', 'n/a')} (`trace`), "
              f"{dropped.get('trace05', 'n/a')} (`trace05`).", ""]
    ins = ft.get("instructions")
    if ins and "error" in ins:
        L += ["benches/instructions.py failed: " + ins["error"].replace("\n", " "), ""]
    elif ins:
        L += [f"Instructions per request, counted (benches/instructions.py: each gateway under valgrind's",
              f"callgrind, {INSTR_REQUESTS} requests after a warm-up, all its threads; no kernel work, SHA-256 in",
              "software, a `rep movsb` copy an instruction per byte):", "",
              "| column | instructions per request | compared with | ÷ it |", "|---|---:|---|---:|"]
        for n, _, base in FEATURES:
            if n in ins:
                L.append(f"| {n} | {f(ins[n], 0)} | {base or ''} | {f(ins[n] / ins[base], 4) if base else ''} |")
        L.append("")
    return L


def feature_goal_rows(res):
    """Issue 25's cost goals, from section H: (what, result, goal, met)."""
    ft = res.get("features") or {}
    cols = ft.get("columns")
    if not cols:
        return []
    rows = []
    for n, what in (("trace", "every request traced (`sample_ratio: 1`) ÷ tracing off, req/s"),
                    ("cachemiss", "every request a cache miss ÷ no cache, req/s")):
        c = cols[n]
        v, pc = c["rps_of_base"], c.get("paired_cpu_of_base")
        # Met only when the interleaved req/s and, loaded together, the CPU
        # per request both say so (1 ÷ 0.97 = 1.031).
        rows.append((what, f"{f(v, 3)} (CPU per request {f(c['cpu_of_base'], 3)} of it; loaded together, CPU per "
                           f"request {f(pc, 3)} of it)", "≥ 0.97 (CPU ≤ 1.031)",
                     v >= 0.97 and (pc is None or pc <= 1 / 0.97)))
    c = cols["cachehit"]
    rows.append(("cache hits ÷ the floor, req/s", f"{f(c['of_floor'])} ({f(c['rps'], 0)} req/s)", "> 1",
                 c["of_floor"] > 1))
    return rows


def goal_rows(res):
    """Issue 21's goals, each from this run: (what, result, goal, met)."""
    sat = res.get("saturation") or {}
    rows = []

    def of_floor(key, what, goal):
        r, fl = sat.get(key), sat.get("floor")
        if r and fl:
            v = ratio(r["rps"], fl["rps"])
            rows.append((what, f"{f(v)} ({f(r['rps'], 0)} vs {f(fl['rps'], 0)} req/s; CPU {f(r['cpu_us_per_req'], 1)} "
                               f"vs {f(fl['cpu_us_per_req'], 1)} µs/req)", f"≥ {goal}", v is not None and v >= goal))

    of_floor("openai", "apiproxy ÷ floor req/s at saturation, default config (3)", 0.92)
    of_floor("nocollect", "the same, console collection off (3c)", 0.95)
    of_floor("anthropic", "Anthropic client → OpenAI upstream ÷ floor (4a)", 0.85)
    for num, den, what, goal in (("store-redis", "store-mem", "Redis store ÷ embedded, key with rpm+tpm (6b ÷ 6a)", 0.90),
                                 ("store-cluster", "store-mem", "Redis Cluster ÷ embedded (6c ÷ 6a)", 0.85),
                                 ("budget-mem", "store-mem", "a key with a budget ÷ without, embedded (6d ÷ 6a)", 0.97),
                                 ("budget-redis", "store-redis", "a key with a budget ÷ without, Redis (6e ÷ 6b)", 0.97)):
        a, b = sat.get(num), sat.get(den)
        if a and b:
            v = ratio(a["rps"], b["rps"])
            rows.append((what, f"{f(v)} (CPU {f(a['cpu_us_per_req'], 1)} vs {f(b['cpu_us_per_req'], 1)} µs/req)",
                         f"≥ {goal}", v is not None and v >= goal))
    runs = res.get("open_streams_runs") or []
    if runs:
        vs = [ratio(r["apiproxy"]["per_stream_kib"], r["floor"]["per_stream_kib"]) for r in runs]
        rows.append(("memory per open stream ÷ floor, each run", ", ".join(f(v) for v in vs), "≤ 1.05 in each",
                     all(v is not None and v <= 1.05 for v in vs)))
    pr = res.get("peers") or {}
    for q in pr.get("peers", []):
        v = ratio(pr["openai"]["rps"], q["rps"])
        rows.append((f"apiproxy ÷ {q['name']} req/s (F)", f(v, 1), f"≥ {q['goal']}", v is not None and v >= q["goal"]))
    sq = res.get("sequential") or {}
    fl = sq.get("floor")
    for key in ("openai", "anthropic"):
        r = sq.get(key)
        if r and fl and r.get("added_p50_us") is not None:
            met = (r["added_p50_us"] <= fl["added_p50_us"] + 25 and r["added_p99_us"] <= fl["added_p99_us"] + 25)
            rows.append((f"added latency at concurrency 1 over direct, p50 / p99 ({dict(res['labels']['json'])[key][:2].strip()})",
                         f"{f(r['added_p50_us'], 0)} / {f(r['added_p99_us'], 0)} µs (floor {f(fl['added_p50_us'], 0)} / "
                         f"{f(fl['added_p99_us'], 0)})", "≤ the floor's + 25 µs", met))
    return rows


def render_goals(res):
    L = []
    for issue, rows in (("21", goal_rows(res)), ("25", feature_goal_rows(res))):
        if not rows:
            continue
        L += [f"### Goals (issue {issue}), all from this run", "", "| what | result | goal | met |", "|---|---|---|---|"]
        for what, result, goal, met in rows:
            L.append(f"| {what} | {result} | {goal} | {'yes' if met else 'no'} |")
        L.append("")
    return L


def render(res):
    m = res["machine"]
    L = []
    L.append(f"apiproxy load benchmark — {m['date']}")
    L.append(f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; {m['rustc']}; {m['oha']}; "
             f"load average at start {m['loadavg_at_start']:.2f}")
    L.append(f"rounds: {res['params']['rounds']} interleaved, {res['params']['seconds']:g} s each; "
             f"medians over rounds; CPU is the serving process's user+system time per completed request")
    L.append("")
    sat, fix = res.get("saturation"), res.get("fixed_rate")
    if sat:
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
        if "nocollect" in sat:
            on, off = sat["openai"]["rps"], sat["nocollect"]["rps"]
            L.append("")
            L.append(f"Console collection cost (3 vs 3c, saturation): {f((1 - ratio(on, off)) * 100 if off else None, 1)} % "
                     f"of req/s ({f(on, 0)} with, {f(off, 0)} without)")
        L.append("")
    if fix:
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
    if "streams" in res:
        st = res["streams"]
        sd, sf = st["direct-sse"], st["floor-sse"]
        L.append(f"### C. SSE streams of 200 events")
        L.append("")
        L.append("TTFB and total: one stream at a time (curl timers, kept-alive connection); streams/s and p50/p99: "
                 f"oha, {res['params']['conns']} connections, whole stream read.")
        L.append("")
        sn = st.get("nginx-sse")
        L.append("The baseline for streams is nginx as a streaming proxy (2b): the bare Pingora floor (2) writes each "
                 "upstream chunk on its own, so it is slower than a streaming proxy that writes what it read at once.")
        L.append("")
        L.append("| scenario | TTFB p50 ms | TTFB p99 ms | total p50 ms | total p99 ms | streams/s | p50 ms | p99 ms "
                 "| p99.9 ms | CPU µs/stream | streams/s ÷ direct | ÷ floor | ÷ nginx | errors |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for key, label in res["labels"]["sse"]:
            r = st.get(key)
            if not r:
                continue
            L.append(f"| {label} | {f(r['ttfb_p50_ms'], 3)} | {f(r['ttfb_p99_ms'], 3)} | {f(r['total_p50_ms'], 3)} "
                     f"| {f(r['total_p99_ms'], 3)} | {f(r['rps'], 0)} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} "
                     f"| {f(r['p999_ms'], 3)} | {f(r['cpu_us_per_req'], 1)} | {f(ratio(r['rps'], sd['rps']))} "
                     f"| {f(ratio(r['rps'], sf['rps']))} | {f(ratio(r['rps'], sn['rps']) if sn else None)} "
                     f"| {int(r['errors'] + r['non_2xx'] + r['failed'])} |")
        L.append("")
    if res.get("open_streams"):
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
        L.extend(render_open_stream_runs(res))
    L.extend(render_big_bodies(res.get("big_bodies")))
    L.extend(render_peers(res))
    L.extend(render_sequential(res))
    L.extend(render_features(res))
    L.extend(render_goals(res))
    L.append(f"### Headline")
    L.append("")
    if sat and sat.get("openai"):
        o = sat["openai"]
        L.append(f"- apiproxy (3) at saturation: {f(ratio(o['rps'], fl['rps']))} of the floor's req/s (goal ≥ 0.95)")
    sn = res.get("streams", {}).get("nginx-sse")
    for key, what in (("openai-sse", "SSE passthrough"), ("anthropic-sse", "SSE translated OpenAI→Anthropic")):
        r = res.get("streams", {}).get(key)
        if r and sn:
            L.append(f"- {what}: {f(ratio(r['rps'], sn['rps']))} of nginx's streams/s as a streaming proxy, "
                     f"CPU µs/stream {f(r['cpu_us_per_req'], 1)} vs {f(sn['cpu_us_per_req'], 1)}")
    if fix:
        for key in ("openai", "anthropic"):
            r = fix.get(key)
            if r:
                label = dict(res["labels"]["json"])[key]
                L.append(f"- {label}: p99 added at {res['params']['rate']} req/s over direct "
                         f"{f(r['p99_ms'] - fd['p99_ms'], 3)} ms, over the floor {f(r['p99_ms'] - ff['p99_ms'], 3)} ms "
                         f"(goal over the floor ≤ 0.05 ms)")
    sm = sat.get("store-mem") if sat and fix else None
    for key, what in (("store-redis", "Redis store"), ("store-cluster", "Redis Cluster store")):
        sr = sat.get(key) if sm else None
        if sm and sr:
            L.append(f"- {what} vs embedded store (key with rpm+tpm: one admission script per request, the token "
                     f"settlement written in the background): req/s ratio {f(ratio(sr['rps'], sm['rps']))} "
                     f"(target ≥ 0.85), CPU µs/req {f(sr['cpu_us_per_req'], 1)} vs {f(sm['cpu_us_per_req'], 1)}, "
                     f"p50 at {res['params']['rate']} req/s {f(fix[key]['p50_ms'], 3)} vs "
                     f"{f(fix['store-mem']['p50_ms'], 3)} ms")
    for budgeted, plain, what in (("budget-mem", "store-mem", "embedded store"), ("budget-redis", "store-redis", "Redis store")):
        b, p = (sat.get(budgeted), sat.get(plain)) if sat else (None, None)
        if b and p:
            L.append(f"- a key with a budget vs one without ({what}; the budget reserved in the same admission script): "
                     f"req/s ratio {f(ratio(b['rps'], p['rps']))} (goal ≥ 0.97), CPU µs/req "
                     f"{f(b['cpu_us_per_req'], 1)} vs {f(p['cpu_us_per_req'], 1)}")
    L.append(f"- wall time of the run: {res['wall_seconds']:.0f} s")
    return "\n".join(L) + "\n"


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target" / "release")
    needs_oha = not ONLY or ONLY - {"big-bodies"}
    for tool in ("oha", "curl") if needs_oha else ():
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is not installed (benches/run.sh installs oha)")
    # BENCH_ONLY=routing: only the routing scenario (benches/routing_bench.py).
    only = os.environ.get("BENCH_ONLY", "")
    if only == "routing":
        import routing_bench
        return routing_bench.main()
    t_start = time.time()
    work = tempfile.mkdtemp(prefix="apiproxy-bench-")
    RESULTS.mkdir(parents=True, exist_ok=True)
    sv = Servers(bin_dir, work)
    ports = {k: free_port() for k in ("mock", "mock_slow", "floor", "floor_slow", "apiproxy", "metrics",
                                      "apiproxy_redis", "metrics_redis", "redis", "apiproxy_cluster",
                                      "metrics_cluster", "apiproxy_nocollect", "metrics_nocollect", "nginx")}
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
        # The Redis-backed gateways only when a chosen scenario uses them.
        wanted = {x.proc for g in scenarios().values() for x in g
                  if (not SCENARIOS or x.key in SCENARIOS) and (part("saturation") or part("fixed"))}
        if "apiproxy_nocollect" in wanted:
            conf_nc = Path(work) / "apiproxy-nocollect.yaml"
            conf_nc.write_text(apiproxy_config(ports, work, "apiproxy_nocollect", "metrics_nocollect", collect=False))
            sv.start("apiproxy_nocollect", [b / "apiproxy", "-c", str(conf_nc)], ports["apiproxy_nocollect"], env=env)
        if "apiproxy_redis" in wanted:
            sv.start("redis", ["redis-server", "--port", str(ports["redis"]), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], ports["redis"])
            conf_redis = Path(work) / "apiproxy-redis.yaml"
            conf_redis.write_text(apiproxy_config(ports, work, "apiproxy_redis", "metrics_redis",
                                                  f"redis://127.0.0.1:{ports['redis']}/0"))
            sv.start("apiproxy_redis", [b / "apiproxy", "-c", str(conf_redis)], ports["apiproxy_redis"], env=env)
        if "apiproxy_cluster" in wanted:
            cluster_url = start_cluster(sv, work)
            conf_cluster = Path(work) / "apiproxy-cluster.yaml"
            conf_cluster.write_text(apiproxy_config(ports, work, "apiproxy_cluster", "metrics_cluster", cluster_url))
            sv.start("apiproxy_cluster", [b / "apiproxy", "-c", str(conf_cluster)], ports["apiproxy_cluster"], env=env)
        has_nginx = part("sse") and streaming_proxy(sv, ports, work)
        sv.ports["metrics"] = ports["metrics"]
        sv.procs_by_name = [(n, p) for n, p in sv.procs]
        sc = scenarios()
        if SCENARIOS:
            keep = SCENARIOS | {"direct", "floor", "direct-sse", "floor-sse", "nginx-sse"}
            sc = {g: [x for x in sc[g] if x.key in keep] for g in sc}
        if not has_nginx:
            sc["sse"] = [x for x in sc["sse"] if x.proc != "nginx"]
        res["labels"] = {g: [(s.key, s.label) for s in sc[g]] for g in sc}
        json_parts = [p for p in ("saturation", "fixed", "sequential") if part(p)]
        sse_on = part("sse")

        if json_parts or sse_on:
            log("warm-up")
            for s in (sc["json"] if json_parts else []) + (sc["sse"] if sse_on else []):
                run_oha(s, sv, 1, CONNS)

        runs = {s.key: [] for s in sc["json"] + sc["sse"]}
        fixed = {s.key: [] for s in sc["json"]}
        seq = {s.key: [] for s in sc["json"] if s.key in SEQUENTIAL}
        for r in range(ROUNDS if (json_parts or sse_on) else 0):
            if part("saturation"):
                log(f"round {r + 1}/{ROUNDS}: saturation")
                for s in sc["json"]:
                    runs[s.key].append(run_oha(s, sv, SECONDS, CONNS))
            if part("fixed"):
                log(f"round {r + 1}/{ROUNDS}: fixed rate {RATE}/s")
                for s in sc["json"]:
                    fixed[s.key].append(run_oha(s, sv, SECONDS, CONNS, rate=RATE))
            if part("sequential"):
                log(f"round {r + 1}/{ROUNDS}: sequential requests, one connection")
                for s in sc["json"]:
                    if s.key in seq:
                        seq[s.key].append(run_oha(s, sv, SEQ_SECONDS, 1))
            if sse_on:
                log(f"round {r + 1}/{ROUNDS}: streams")
                for s in sc["sse"]:
                    row = run_oha(s, sv, SECONDS, CONNS)
                    row.update(curl_ttfb(s, sv, TTFB_SAMPLES, work))
                    runs[s.key].append(row)
        if part("saturation"):
            res["saturation"] = {s.key: median_of(runs[s.key]) for s in sc["json"]}
        if part("fixed"):
            res["fixed_rate"] = {s.key: median_of(fixed[s.key]) for s in sc["json"]}
        if sse_on:
            res["streams"] = {s.key: median_of(runs[s.key]) for s in sc["sse"]}
        if part("sequential"):
            res["sequential"] = sequential_added(seq)
        res["rounds_raw"] = {"saturation": runs, "fixed_rate": fixed, "sequential": seq}

        if part("big-bodies"):
            res["big_bodies"] = big_bodies(sv, ports, work, env)
        if PEERS and part("peers"):
            try:
                res["peers"] = peers(sv, ports, work, sc["json"])
            except SystemExit as e:
                # A peer that does not start costs its table, not the run's.
                log(f"peers: {e}; skipped")
                res["peers"] = {"error": str(e)}

        res["open_streams"] = {}
        res["open_streams_runs"] = []
        if STREAMS > 0 and part("open-streams"):
            # Each run on fresh processes: one that served a run before keeps
            # its allocator's pages, and its next peak says little.
            for run in range(max(STREAM_RUNS, 1)):
                names = {"gw": f"apiproxy_os{run}", "metrics": f"metrics_os{run}", "floor": f"floor_os{run}"}
                for n in names.values():
                    ports[n] = free_port()
                conf_os = Path(work) / f"{names['gw']}.yaml"
                conf_os.write_text(apiproxy_config(ports, work, names["gw"], names["metrics"]))
                sv.start(names["gw"], [b / "apiproxy", "-c", str(conf_os)], ports[names["gw"]], env=env)
                sv.start(names["floor"], [b / "bench-floor", "--listen", f"127.0.0.1:{ports[names['floor']]}",
                                          "--upstream", f"127.0.0.1:{ports['mock_slow']}", "--threads", "2"],
                         ports[names["floor"]])
                sv.procs_by_name = [(n, p) for n, p in sv.procs]
                log(f"{STREAMS} open streams through a fresh apiproxy and floor ({run + 1}/{STREAM_RUNS})")
                # The same request to both, as in every other section: a
                # header more or less moves each stream's header map a size.
                auth = ["Authorization: Bearer " + CLIENT_KEY]
                one = {
                    "apiproxy": open_streams_rss(
                        sv, names["gw"], names["gw"], "/v1/chat/completions", chat_body("slow-model", True),
                        auth, STREAMS, metrics_port=ports[names["metrics"]]),
                    "floor": open_streams_rss(
                        sv, names["floor"], names["floor"], "/v1/chat/completions", chat_body("slow-model", True),
                        auth, STREAMS),
                }
                stop_one(sv, names["gw"])
                stop_one(sv, names["floor"])
                res["open_streams_runs"].append(one)
            # Section D's table shows the first run; every run is listed under it.
            res["open_streams"] = res["open_streams_runs"][0]

        if PROFILE and shutil.which("perf"):
            profile(sv, sc["json"], work)
    finally:
        sv.stop()
    if part("features") and needs_oha:
        log("tracing and the response cache against the same gateway without them (benches/ab.py)")
        res["features"] = features(bin_dir, work)
    import routing_bench
    if part("routing"):
        log("routing scenario (benches/routing_bench.py)")
        res["routing"] = routing_bench.run(bin_dir)
    res["wall_seconds"] = time.time() - t_start
    table = render(res) + (routing_bench.render(res["routing"]) if "routing" in res else "")
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("latest", f"run-{stamp}"):
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(table)
    log(f"written to {RESULTS}/latest.md and latest.json (logs in {work})")
    failed = failures(res)
    if failed:
        raise SystemExit("bench: requests failed, so the ratios above are not to be trusted:\n  " + "\n  ".join(failed))


def failures(res):
    """Every measured run with non-2xx answers or transport errors: a run
    with any fails `make bench` (the table is still written, to read why)."""
    out = []

    def walk(where, v):
        if isinstance(v, dict):
            bad = (v.get("non_2xx") or 0) + (v.get("errors") or 0) if "non_2xx" in v else 0
            if bad:
                out.append(f"{where}: {int(bad)} failed ({v.get('error_kinds') or 'non-2xx'})")
            for k, x in v.items():
                walk(f"{where}.{k}" if where else str(k), x)
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(f"{where}[{i}]", x)

    walk("", {k: v for k, v in res.items() if k != "routing"})
    if "error" in (res.get("features") or {}):
        out.append("features: benches/ab.py failed")
    return out


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


# The scenarios BENCH_PROFILE records: the floor beside apiproxy, and the
# embedded store beside Redis, so each gap can be read off the same run.
PROFILED = ("floor", "openai", "store-mem", "store-redis")


def profile(sv, scs, work):
    """perf record of the serving process during one extra saturation run of
    each profiled scenario; reports in results/perf-<stamp>-<key>-{flat,children}.txt."""
    procs = dict(sv.procs_by_name)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for sc in scs:
        if sc.key not in PROFILED or sc.proc not in procs:
            continue
        data = Path(work) / f"perf-{sc.key}.data"
        rec = subprocess.Popen(["perf", "record", "-F", "999", "-g", "--call-graph", "dwarf,16384", "-p",
                                str(procs[sc.proc].pid), "-o", str(data), "--", "sleep", str(SECONDS)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        oha(sc.url(sv.ports), sc.body, sc.headers, SECONDS, CONNS)
        rec.wait()
        for kind, args in (("flat", ["--no-children"]), ("children", ["--children"])):
            out = RESULTS / f"perf-{stamp}-{sc.key}-{kind}.txt"
            with open(out, "w") as fh:
                subprocess.run(["perf", "report", "-i", str(data), "--stdio", "-g", "none",
                                "--percent-limit", "0.5", *args], stdout=fh, stderr=subprocess.DEVNULL)
            log(f"profile: {out}")


if __name__ == "__main__":
    main()
