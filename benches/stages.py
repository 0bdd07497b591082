"""Where a gateway's CPU per request goes, by stage, from a `perf record
--call-graph dwarf` of the process: each sample is put in the innermost
stage its stack passes through (a stage is a part of the gateway, matched
by the names of its functions), and counted as user or kernel time by
where the sample itself fell. Run on the floor's profile too: its work
falls under `pingora` and `other`.

usage: python3 benches/stages.py PERF_DATA REQUESTS [HZ]
       PERF_DATA  a `perf record --call-graph dwarf -F HZ -p PID` of one process
       REQUESTS   the requests it answered while recorded
       HZ         the sampling frequency (default 499)
Prints µs of CPU per request, user and kernel, per stage.

How the figures in benches/README.md were made (section "Issue 21's
goals: what each gap is made of"): a paired round with the gateways pinned
(`AB_PIN=1 AB_PAIRS_ONLY=1 AB_PAIRS=plain:floor python3 benches/ab.py 1 15
plain=DIR`), `perf record --call-graph dwarf,16384 -F 499 -p PID` on each
of the two processes while it ran, and the round's request counts from
`AB_JSON`."""
import collections
import re
import subprocess
import sys

# (stage, a pattern of the function names that make a frame part of it),
# in the order they are tried: a frame is the first stage it matches, and
# a sample the stage of its innermost frame that matches any.
STAGES = [
    ("console collection", r"apiproxy::console::"),
    ("access log", r"apiproxy::access_log|apiproxy::applog"),
    ("metrics", r"apiproxy::metrics::|prometheus::"),
    ("usage report counters", r"UsageCounters|usage_count"),
    ("cost (pricing)", r"apiproxy::pricing"),
    ("client key check", r"apiproxy::auth::"),
    ("request body read and checked", r"apiproxy::body::|apiproxy::model_name|apiproxy::proxy::request::|proxy::llm::read_request"),
    ("routing", r"apiproxy::routing::"),
    ("upstream request header", r"upstream::http::request_header"),
    ("answer read (usage, translation)", r"apiproxy_translate::"),
    ("logging phase, rest", r"ProxyHttp>::logging"),
    ("request path, rest (attempts, relay, futures)", r"apiproxy::proxy::|apiproxy::upstream::"),
    ("listener (request head read)", r"apiproxy::listener"),
    ("pingora (HTTP/1 server and client, pool)", r"pingora"),
]
OTHER = "other (runtime, allocator, libc)"


def stages(data, requests, hz=499.0):
    """{stage: (user µs, kernel µs)} per request."""
    pats = [(n, re.compile(p)) for n, p in STAGES]
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym", "--no-inline"],
                         capture_output=True, text=True, check=True).stdout
    user, kern = collections.Counter(), collections.Counter()
    for block in out.split("\n\n"):
        frames = [ln.strip().split(None, 1) for ln in block.strip().splitlines() if ln.strip()]
        if not frames:
            continue
        where = OTHER
        for f in frames:
            if f[0].startswith("ffffffff") or len(f) < 2:
                continue
            hit = next((n for n, p in pats if p.search(f[1])), None)
            if hit:
                where = hit
                break
        (kern if frames[0][0].startswith("ffffffff") else user)[where] += 1
    us = 1e6 / hz / requests
    return {n: (user[n] * us, kern[n] * us) for n in set(user) | set(kern)}


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    res = stages(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 499.0)
    tu, tk = sum(u for u, _ in res.values()), sum(k for _, k in res.values())
    print(f"{'stage':48s} {'user µs':>8s} {'kernel µs':>10s}")
    for n, (u, k) in sorted(res.items(), key=lambda kv: -sum(kv[1])):
        print(f"{n:48s} {u:8.2f} {k:10.2f}")
    print(f"{'total':48s} {tu:8.2f} {tk:10.2f}")


if __name__ == "__main__":
    main()
