#!/usr/bin/env python3
"""Routing scenario of the load harness (issue 9).

Three mock upstreams behind one logical model of equal weights: `fast`
(answers in BASE ms), `slow` (10x BASE) and `flaky` (BASE, but 500 to 30%
of requests). The same load runs through three apiproxy instances that
differ only in routing: `weighted` (`routing.scoring.mode: weighted`, plain
weighted random), `adaptive` (the default scoring) and `adaptive+hedge`
(the default scoring and `hedge_after_ms: 3 x BASE` with `hedge_non_stream: true`
on the logical model,
with the default hedge budget of 10% of requests). Reported for each: every
upstream's share of the answers it served, client p50/p99 and failed
requests.

Run alone with `BENCH_ONLY=routing make bench` (or `python3
benches/routing_bench.py target/release`); `make bench` runs it last.
Knobs: BENCH_ROUTING_SECONDS (default 20, per mode and round),
BENCH_ROUTING_CONNS (default 16), BENCH_ROUTING_BASE_MS (default 20),
BENCH_ROUTING_ROUNDS (default 3: the modes take turns, round after round, so
machine noise hits them alike; each figure is the median over rounds, with
the spread beside it).
Everything listens on 127.0.0.1; nothing here asserts a number.
"""

import json
import os
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

SECONDS = float(os.environ.get("BENCH_ROUTING_SECONDS", "20"))
CONNS = int(os.environ.get("BENCH_ROUTING_CONNS", "16"))
BASE_MS = int(os.environ.get("BENCH_ROUTING_BASE_MS", "20"))
UPSTREAMS = ("fast", "slow", "flaky")
ROUNDS = max(1, int(os.environ.get("BENCH_ROUTING_ROUNDS", "3")))


def log(msg):
    print(f"[bench:routing] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port}")


# name → (routing.scoring.mode, hedge_after_ms or None)
MODES = {
    "weighted": ("weighted", None),
    "adaptive": ("adaptive", None),
    "adaptive+hedge": ("adaptive", 3 * BASE_MS),
}


def config(name, port, metrics, ports, work):
    mode, hedge_ms = MODES[name]
    # The bench's requests are not streamed: hedging them is opt-in
    # (`hedge_non_stream`), as a non-streaming hedge runs two generations.
    hedge = f"    hedge_after_ms: {hedge_ms}\n    hedge_non_stream: true\n" if hedge_ms else ""
    slug = name.replace("+", "-")
    providers = "".join(
        f'  - {{ id: {u}, kind: openai, base_url: "http://127.0.0.1:{ports[u]}", models: [m] }}\n'
        for u in UPSTREAMS
    )
    upstreams = "".join(f"      - {{ provider: {u}, model: m }}\n" for u in UPSTREAMS)
    return f"""# written by benches/routing_bench.py
server:
  listen: 127.0.0.1:{port}
  metrics_listen: 127.0.0.1:{metrics}
  threads: 2
  pid_file: {work}/apiproxy-{slug}.pid
  upgrade_sock: {work}/apiproxy-{slug}.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
log:
  level: warn
routing:
  scoring: {{ mode: {mode} }}
providers:
{providers}models:
  - name: pool
{hedge}    upstreams:
{upstreams}"""


def served(metrics_port):
    """Answers served per upstream (`apiproxy_upstream_attempts_total`, ok)."""
    out = {u: 0.0 for u in UPSTREAMS}
    failed = {u: 0.0 for u in UPSTREAMS}
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if not line.startswith("apiproxy_upstream_attempts_total{"):
                continue
            labels, value = line.rsplit(" ", 1)
            for u in UPSTREAMS:
                if f'provider="{u}"' in labels:
                    if 'outcome="ok"' in labels:
                        out[u] += float(value)
                    else:
                        failed[u] += float(value)
    return out, failed


def load(port, seconds, conns):
    """A closed loop of `conns` keep-alive clients for `seconds`: each
    request's latency and status. (A Python client is plenty at this rate:
    upstream delays of tens of milliseconds dominate, and it needs no oha.)"""
    import http.client
    import threading

    body = json.dumps({"model": "pool", "max_tokens": 16,
                       "messages": [{"role": "user", "content": "hi"}]})
    end = time.time() + seconds
    results = []
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.time() < end:
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append((time.perf_counter() - t0, status))
        conn.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pct(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def run(bin_dir, work=None):
    bin_dir = Path(bin_dir).resolve()
    work = Path(work or tempfile.mkdtemp(prefix="apiproxy-routing-bench-"))
    procs = []

    def start(name, args, port):
        out = open(work / f"{name}.log", "wb")
        p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=work)
        procs.append((name, p))
        wait_port(port, p, name)
        return p

    ports = {u: free_port() for u in UPSTREAMS}
    res = {"params": {"seconds": SECONDS, "conns": CONNS, "base_ms": BASE_MS, "rounds": ROUNDS,
                      "slow_ms": 10 * BASE_MS, "flaky_fail_percent": 30}, "modes": {}}
    try:
        mock = bin_dir / "bench-mock"
        start("fast", [mock, "--listen", f"127.0.0.1:{ports['fast']}", "--delay-ms", str(BASE_MS)], ports["fast"])
        start("slow", [mock, "--listen", f"127.0.0.1:{ports['slow']}", "--delay-ms", str(10 * BASE_MS)],
              ports["slow"])
        start("flaky", [mock, "--listen", f"127.0.0.1:{ports['flaky']}", "--delay-ms", str(BASE_MS),
                        "--fail-percent", "30"], ports["flaky"])
        gateways = {}
        for mode in MODES:
            port, metrics = free_port(), free_port()
            slug = mode.replace("+", "-")
            conf = work / f"apiproxy-{slug}.yaml"
            conf.write_text(config(mode, port, metrics, ports, work))
            start(f"apiproxy-{slug}", [bin_dir / "apiproxy", "-c", str(conf)], port)
            gateways[mode] = (port, metrics)
        rounds = {mode: [] for mode in MODES}
        for r in range(ROUNDS):
            for mode in MODES:
                port, metrics = gateways[mode]
                log(f"{mode}, round {r + 1} of {ROUNDS}: {SECONDS:.0f} s at {CONNS} connections")
                before_ok, before_failed = served(metrics)
                started = time.time()
                results = load(port, SECONDS, CONNS)
                elapsed = time.time() - started
                after_ok, after_failed = served(metrics)
                lat = sorted(t for t, _ in results)
                rounds[mode].append({
                    "requests": len(results),
                    "rps": len(results) / elapsed,
                    "p50_ms": pct(lat, 50) * 1000,
                    "p99_ms": pct(lat, 99) * 1000,
                    "failed": sum(1 for _, st in results if not 200 <= st < 300),
                    "served": {u: after_ok[u] - before_ok[u] for u in UPSTREAMS},
                    "upstream_failures": {u: after_failed[u] - before_failed[u] for u in UPSTREAMS},
                })
        for mode in MODES:
            rs = rounds[mode]
            ok = {u: sum(x["served"][u] for x in rs) for u in UPSTREAMS}
            total = sum(ok.values()) or 1.0
            med = lambda k: statistics.median(x[k] for x in rs)
            res["modes"][mode] = {
                "rounds": rs,
                "requests": sum(x["requests"] for x in rs),
                "rps": med("rps"),
                "p50_ms": med("p50_ms"),
                "p99_ms": med("p99_ms"),
                "p99_spread_ms": [min(x["p99_ms"] for x in rs), max(x["p99_ms"] for x in rs)],
                "failed": sum(x["failed"] for x in rs),
                "share": {u: ok[u] / total for u in UPSTREAMS},
                "served": ok,
                "upstream_failures": {u: sum(x["upstream_failures"][u] for x in rs) for u in UPSTREAMS},
            }
    finally:
        for name, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGINT if name.startswith("apiproxy") else signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
    w = res["modes"].get("weighted")
    for mode in ("adaptive", "adaptive+hedge"):
        a = res["modes"].get(mode)
        if w and a and w["p99_ms"]:
            # Per round (the modes ran side by side in each), then the median and spread.
            per_round = [x["p99_ms"] / y["p99_ms"] for x, y in zip(a["rounds"], w["rounds"]) if y["p99_ms"]]
            res.setdefault("p99_ratios", {})[mode] = {
                "median": statistics.median(per_round),
                "min": min(per_round),
                "max": max(per_round),
            }
    return res


def render(res):
    p = res["params"]
    lines = [
        "",
        f"### Routing: fast {p['base_ms']} ms, slow {p['slow_ms']} ms, flaky {p['base_ms']} ms with "
        f"{p['flaky_fail_percent']}% 500s; {p['conns']} connections, {p['seconds']:.0f} s per mode and round, "
        f"{p['rounds']} interleaved rounds (medians; p99 spread over rounds)",
        "",
        "| scoring | requests | req/s | p50 ms | p99 ms | p99 spread ms | failed | fast share | slow share "
        "| flaky share | flaky 500s absorbed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, m in res["modes"].items():
        s = m["share"]
        lines.append(
            f"| {mode} | {m['requests']} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} "
            f"| {m['p99_spread_ms'][0]:.1f}–{m['p99_spread_ms'][1]:.1f} | {m['failed']} "
            f"| {s['fast']:.1%} | {s['slow']:.1%} | {s['flaky']:.1%} | {m['upstream_failures']['flaky']:.0f} |"
        )
    for mode, ratio in res.get("p99_ratios", {}).items():
        lines.append("")
        lines.append(f"{mode} p99 / weighted p99 = {ratio['median']:.2f} (rounds {ratio['min']:.2f}–{ratio['max']:.2f}; "
                     f"goal ≤ 0.5, 0 failed)")
    return "\n".join(lines) + "\n"


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parent.parent / "target/release")
    res = run(bin_dir)
    table = render(res)
    print(table)
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "routing-latest.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "routing-latest.md").write_text(table)
    log(f"written to {out}/routing-latest.md")


if __name__ == "__main__":
    main()
