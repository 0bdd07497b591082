"""A/B of apiproxy builds: each build's gateway and the floor side by side on
one mock, measured in interleaved rounds at saturation (32 connections), so
machine noise hits every build alike. Copy the binaries of each build
(apiproxy, bench-floor, bench-mock) into a directory of its own first.

usage: python3 benches/ab.py ROUNDS SECONDS name=DIR[@STORE] [name=DIR[@STORE] ...]
env:   AB_MODEL (default bench-model), AB_PATH (default /v1/chat/completions),
       AB_KEY (the client key), AB_REDIS (a redis:// URL: the gateways use it)
A build's own @STORE (a redis:// or redis+cluster:// URL, or `embedded`)
overrides AB_REDIS for it: one run can then put the same binaries on the
embedded store and on Redis side by side (the Redis ÷ embedded ratio).
Prints per build: median req/s, ÷ the floor, median CPU µs per request."""
import os
import statistics
import sys
import tempfile
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h
from pathlib import Path
rounds, secs = int(sys.argv[1]), float(sys.argv[2])
builds = [a.split("=", 1) for a in sys.argv[3:]]
# name=DIR@STORE: the directory holds no '@'; a URL after it may (a password).
stores = {n: (d.split("@", 1)[1] if "@" in d else os.environ.get("AB_REDIS")) for n, d in builds}
stores = {n: (None if u == "embedded" else u) for n, u in stores.items()}
builds = [(n, d.split("@", 1)[0]) for n, d in builds]
work = tempfile.mkdtemp(prefix="ab-")
sv = h.Servers(builds[0][1], work)
names = ["mock", "mock_slow", "floor"] + [f"apiproxy_{n}" for n, _ in builds] + [f"metrics_{n}" for n, _ in builds]
ports = {k: h.free_port() for k in names}
try:
    b0 = Path(builds[0][1])
    sv.start("mock", [b0 / "bench-mock", "--listen", f"127.0.0.1:{ports['mock']}", "--threads", "2", "--events", "200"], ports["mock"])
    ports["mock_slow"] = ports["mock"]
    sv.start("floor", [b0 / "bench-floor", "--listen", f"127.0.0.1:{ports['floor']}", "--upstream", f"127.0.0.1:{ports['mock']}", "--threads", "2"], ports["floor"])
    env = dict(os.environ); env.pop("RUST_LOG", None)
    for n, d in builds:
        conf = Path(work) / f"{n}.yaml"
        conf.write_text(h.apiproxy_config(ports, work, f"apiproxy_{n}", f"metrics_{n}", stores[n]))
        sv.start(f"apiproxy_{n}", [Path(d) / "apiproxy", "-c", str(conf)], ports[f"apiproxy_{n}"], env=env)
    procs = dict(sv.procs)
    path = os.environ.get("AB_PATH", "/v1/chat/completions")
    key = os.environ.get("AB_KEY", h.CLIENT_KEY)
    body = h.chat_body(os.environ.get("AB_MODEL", "bench-model"))
    hdrs = ["Authorization: Bearer " + key]
    targets = ["floor"] + [f"apiproxy_{n}" for n, _ in builds]
    res = {t: [] for t in targets}
    for r in range(rounds):
        for t in targets:
            pid = procs[t].pid
            c0 = h.cpu_seconds(pid)
            raw = h.oha(f"http://127.0.0.1:{ports[t]}{path}", body, hdrs, secs, 32)
            c1 = h.cpu_seconds(pid)
            s = raw["summary"]
            codes = raw.get("statusCodeDistribution", {})
            ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
            # 2xx answers only: a build answering errors fast must not look fast.
            rps = ok / s["total"] if s.get("total") else s["requestsPerSec"]
            res[t].append((rps, (c1 - c0) / max(ok, 1) * 1e6, ok, sum(codes.values()) - ok))
    for t in targets:
        rps = statistics.median(x[0] for x in res[t]); cpu = statistics.median(x[1] for x in res[t])
        fl = statistics.median(x[0] for x in res["floor"])
        print(f"{t:20s} req/s {rps:8.0f} ÷floor {rps/fl:5.3f}  cpu µs/req {cpu:6.1f}  rounds {[round(x[1],1) for x in res[t]]} req/s rounds {[round(x[0]) for x in res[t]]} bad {sum(x[3] for x in res[t])}")
finally:
    sv.stop()
