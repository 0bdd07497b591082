"""A/B of apiproxy builds and configs: each column's gateway and the floor
side by side on one mock, measured in interleaved rounds at saturation (32
connections), so machine noise hits every column alike. Copy the binaries of
each build (apiproxy, bench-floor, bench-mock) into a directory of its own
first (the first column's directory provides the floor and the mock).

usage: python3 benches/ab.py ROUNDS SECONDS name=DIR[:VARIANT[+VARIANT...]][@STORE] ...
       A column is a build directory and, optionally, variants of the config
       benches/harness.py::apiproxy_config writes for it (none: that config
       as is: console collecting, text access log, metrics, key `bench`
       without limits, model `bench-model` with a price):
         nocollect  console.collect: false
         nolog      log.level: warn (no access log)
         jsonlog    log.access_format: json
         budget     the key `bench` gets budget_usd (a budget checked and charged)
         rate       the key `bench` gets rpm and tpm (the harness's 6a key)
         ratebudget the key `bench` gets rpm, tpm and budget_usd (6d's key)
         rules      three payload rules on every request (a default, an
                    override into messages.0.content, a removal)
         header     one header rule on every request (set x-bench)
         logical    requests go to `bench-logical` (two upstreams on the mock)
         hedge      as logical, the model with hedge_after_ms 60000 and
                    hedge_non_stream (a hedge armed on every request, never started)
         ring10     console.recent_requests: 10 (the records' ring small
                    enough to stay in the cache)
         noprice    the model has no price (no cost metric: the unpriced counter)
         anthropic  requests in the Anthropic Messages format (/v1/messages),
                    translated to the OpenAI upstream (the harness's 4a)
         long       requests of about 4 KiB (38 turns) instead of one turn
         cachemiss  as logical, the model with cache_ttl_seconds and a
                    cache.max_entry_bytes no answer fits: every request is a
                    miss (key hashed, looked up, answer recorded and encoded
                    for the store, then not stored for its size)
         cachehit   as logical, the model with cache_ttl_seconds: every
                    request after the first is answered from the cache
         trace      telemetry.otlp with sample_ratio 1 to an OTLP/HTTP sink
                    on loopback (a bench-mock, which reads each export and
                    answers 200, started by ab.py when a column asks for
                    it): every request traced and exported
         trace0     the same with sample_ratio 0: no request sampled, what
                    an unsampled request pays (its trace context and ids,
                    the traceparent each attempt sends upstream)
         trace05    the same with sample_ratio 0.05: one request in twenty
                    traced and exported
       e.g. base=DIR off=DIR:nocollect json=DIR:jsonlog
       A column's own @STORE (a redis:// or redis+cluster:// URL, or
       `embedded`) overrides AB_REDIS for it: one run can then put the same
       binaries on the embedded store and on Redis side by side.
env:   AB_MODEL (default bench-model), AB_PATH (default /v1/chat/completions),
       AB_KEY (the client key), AB_REDIS (a redis:// URL: the gateways use it),
       AB_BASE (a column's name: each column is also compared with it round by
       round, the median over rounds of the two ratios, which a slow patch of
       the machine moves less than the ratio of the medians),
       AB_JSON (a file: every round's figures written there as JSON, for
       benches/harness.py's section H),
       AB_PAIRS (COLUMN:BASE,...: after the rounds above, as many paired
       rounds, each pair's two gateways loaded at the same time, 16
       connections each, and compared within the round: CPU µs per request
       and req/s of the column ÷ its base. Both share the cores through the
       same seconds, so a slow patch of the machine hits both; the CPU
       ratio is the cost ratio, the req/s ratio moves less than it when the
       gateways are not saturated; AB_PAIRS_ONLY=1 runs these alone),
       AB_RATE (req/s: each gateway of a paired round is sent this many
       requests per second rather than as many as it answers, so both do
       the same work and neither's CPU per request moves with how much
       batching saturation gives it; `floor` may be either side of a pair),
       AB_PIN (1: the gateways and the floor run on the machine's last core
       and everything else, the load, the mock and the sink included, on
       the others: a gateway saturates its own core, and a paired round's
       CPU ratio is what each costs that core; two identical gateways read
       0.986–1.004 round by round, where unpinned pairs at saturation
       spread by ±5%; at saturation a pinned pair reads a difference about
       twice what AB_RATE pairs read; needs two cores or more).
Columns run in the order given in even rounds and in the reverse order in
odd ones.
Prints per column: median req/s, ÷ the floor, median CPU µs per request."""
import json
import os
import statistics
import sys
import tempfile
import threading
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h
from variants import VARIANTS, MODEL, CLIENT, uses_sink
from pathlib import Path


rounds, secs = int(sys.argv[1]), float(sys.argv[2])
builds, variants = [], {}
stores = {}
for a in sys.argv[3:]:
    n, spec = a.split("=", 1)
    # @STORE last: the directory holds no '@'; a URL after it may (a password).
    spec, at, store = spec.partition("@")
    stores[n] = (store if at else os.environ.get("AB_REDIS")) or None
    if stores[n] == "embedded":
        stores[n] = None
    d, _, vs = spec.partition(":")
    # A directory may hold a colon; a variant list is only what names variants.
    if vs and not all(v in VARIANTS for v in vs.split("+")):
        d, vs = spec, ""
    builds.append((n, d))
    variants[n] = [v for v in vs.split("+") if v]
work = tempfile.mkdtemp(prefix="ab-")
sv = h.Servers(builds[0][1], work)
tracing = any(uses_sink(v) for v in variants.values())
names = ["mock", "mock_slow", "floor"] + (["sink"] if tracing else []) + [f"apiproxy_{n}" for n, _ in builds] + [f"metrics_{n}" for n, _ in builds]
ports = {k: h.free_port() for k in names}
try:
    b0 = Path(builds[0][1])
    sv.start("mock", [b0 / "bench-mock", "--listen", f"127.0.0.1:{ports['mock']}", "--threads", "2", "--events", "200"], ports["mock"])
    ports["mock_slow"] = ports["mock"]
    sv.start("floor", [b0 / "bench-floor", "--listen", f"127.0.0.1:{ports['floor']}", "--upstream", f"127.0.0.1:{ports['mock']}", "--threads", "2"], ports["floor"])
    if tracing:
        # The collector is not the gateway's cost: a compiled server that
        # reads each export and answers 200 (the mock does), where a Python
        # one took 2.6% of a core from the gateway on this two-core machine.
        sv.start("sink", [b0 / "bench-mock", "--listen", f"127.0.0.1:{ports['sink']}", "--threads", "1"], ports["sink"])
    env = dict(os.environ); env.pop("RUST_LOG", None)
    for n, d in builds:
        conf = Path(work) / f"{n}.yaml"
        text = h.apiproxy_config(ports, work, f"apiproxy_{n}", f"metrics_{n}", stores[n])
        for v in variants[n]:
            text = VARIANTS[v](text, work, n, ports)
        conf.write_text(text)
        sv.start(f"apiproxy_{n}", [Path(d) / "apiproxy", "-c", str(conf)], ports[f"apiproxy_{n}"], env=env)
    procs = dict(sv.procs)
    if os.environ.get("AB_PIN"):
        # The gateways (and the floor) on the last core, the load and the
        # mock on the others: a gateway's req/s is then its own core's.
        last = max(os.sched_getaffinity(0))
        rest = set(os.sched_getaffinity(0)) - {last}
        if not rest:
            raise SystemExit("AB_PIN needs two cores or more")
        for name, p in sv.procs:
            cores = {last} if name == "floor" or name.startswith("apiproxy_") else rest
            for tid in os.listdir(f"/proc/{p.pid}/task"):
                os.sched_setaffinity(int(tid), cores)
        os.sched_setaffinity(0, rest)
    path = os.environ.get("AB_PATH", "/v1/chat/completions")
    key = os.environ.get("AB_KEY", h.CLIENT_KEY)
    model = os.environ.get("AB_MODEL", "bench-model")
    def request_of(n):
        m = next((MODEL[v] for v in variants[n] if v in MODEL), model)
        p, body = next((CLIENT[v] for v in variants[n] if v in CLIENT), (path, h.chat_body))
        return p, body(m)
    requests = {f"apiproxy_{n}": request_of(n) for n, _ in builds}
    hdrs = ["Authorization: Bearer " + key]
    targets = ["floor"] + [f"apiproxy_{n}" for n, _ in builds]
    res = {t: [] for t in targets}

    def load(t, conns, rate=None):
        """One timed run against `t`: (req/s, CPU µs per request, 2xx, other)."""
        pid = procs[t].pid
        c0 = h.cpu_seconds(pid)
        p, body = requests.get(t, (path, h.chat_body(model)))
        raw = h.oha(f"http://127.0.0.1:{ports[t]}{p}", body, hdrs, secs, conns, rate)
        c1 = h.cpu_seconds(pid)
        s = raw["summary"]
        codes = raw.get("statusCodeDistribution", {})
        ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
        # 2xx answers only: a build answering errors fast must not look fast.
        rps = ok / s["total"] if s.get("total") else s["requestsPerSec"]
        return (rps, (c1 - c0) / max(ok, 1) * 1e6, ok, sum(codes.values()) - ok)

    # AB_PAIRS_ONLY=1: the paired rounds alone (a profile of both sides).
    for r in range(0 if os.environ.get("AB_PAIRS_ONLY") else rounds):
        # Every other round in the reverse order: a machine that speeds up
        # or slows down during a round favours no column.
        for t in (targets if r % 2 == 0 else targets[::-1]):
            res[t].append(load(t, 32))
    pairs = [tuple(x if x == "floor" else f"apiproxy_{x}" for x in p.split(":"))
             for p in os.environ.get("AB_PAIRS", "").split(",") if p]
    # A column's paired rounds are under its name; one paired with several
    # bases has them under "column:base", one list per base.

    def pair_key(t, b):
        return t if [p[0] for p in pairs].count(t) == 1 else f"{t}:{b}"
    paired = {pair_key(t, b): [] for t, b in pairs}

    for r in range(rounds if pairs else 0):
        for t, b in pairs:
            got = {}

            def run(x):
                got[x] = load(x, 16, os.environ.get("AB_RATE"))
            both = [threading.Thread(target=run, args=(x,)) for x in ((t, b) if r % 2 == 0 else (b, t))]
            for th in both:
                th.start()
            for th in both:
                th.join()
            # (req/s ÷ base, CPU per request ÷ base, the column's 2xx, either's
            # other answers, the base's 2xx) per round.
            paired[pair_key(t, b)].append((got[t][0] / got[b][0], got[t][1] / got[b][1], got[t][2], got[t][3] + got[b][3], got[b][2]))
    for t in (t for t in targets if res[t]):
        rps = statistics.median(x[0] for x in res[t]); cpu = statistics.median(x[1] for x in res[t])
        fl = statistics.median(x[0] for x in res["floor"])
        print(f"{t:20s} req/s {rps:8.0f} ÷floor {rps/fl:5.3f}  cpu µs/req {cpu:6.1f}  rounds {[round(x[1],1) for x in res[t]]} req/s rounds {[round(x[0]) for x in res[t]]} bad {sum(x[3] for x in res[t])}")
    dropped = {}
    for n, _ in builds:
        if uses_sink(variants[n]):
            dropped[n] = h.metric_value(ports[f"metrics_{n}"], "apiproxy_otlp_dropped_spans_total")
            print(f"apiproxy_{n:14s} spans dropped (apiproxy_otlp_dropped_spans_total): {dropped[n]}")
    if os.environ.get("AB_JSON"):
        # (req/s, CPU µs per request, 2xx, other) per round, per column.
        Path(os.environ["AB_JSON"]).write_text(json.dumps({"rounds": res, "paired": paired, "dropped_spans": dropped}))
    base = os.environ.get("AB_BASE")
    if base and res[f"apiproxy_{base}"]:
        b = res[f"apiproxy_{base}"]
        for t in targets[1:]:
            rps = statistics.median(x[0] / y[0] for x, y in zip(res[t], b))
            cpu = statistics.median(x[1] / y[1] for x, y in zip(res[t], b))
            print(f"{t:20s} ÷ {base}, round by round: req/s {rps:5.3f}  cpu µs/req {cpu:5.3f}")
    for (t, b) in pairs:
        x = paired[pair_key(t, b)]
        print(f"{t:20s} ÷ {b}, loaded together: req/s {statistics.median(v[0] for v in x):5.3f}  cpu µs/req "
              f"{statistics.median(v[1] for v in x):5.3f}  rounds cpu {[round(v[1], 3) for v in x]} bad {sum(v[3] for v in x)}")
finally:
    sv.stop()
