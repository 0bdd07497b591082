"""Instructions per request, counted: each column's gateway run under
valgrind's callgrind for a fixed number of requests, so two builds or two
configs compare without the machine's noise (a count, not a time).

usage: python3 benches/instructions.py REQUESTS name=DIR[:VARIANT[+VARIANT...]] ...
       Columns as benches/ab.py takes them (the same variants, the embedded
       store); the first is the base every other is divided by.
env:   INSTR_TOP=N also lists the N functions whose own instructions per
       request differ most from the base's; INSTR_KEEP=DIR keeps each
       column's callgrind file there; INSTR_JSON=FILE writes each column's
       instructions per request there (benches/harness.py's section H).

Each column: the mock (and, for `trace`, a sink) started, the gateway
started under callgrind, 300 requests to warm it, the counters zeroed,
REQUESTS requests (4 connections), 1.5 s for a trace batch to be exported,
the counters dumped. All of the gateway's threads are counted (the export
thread's included); the kernel's work is not.

What a count does not say: time. Valgrind's CPU has no SHA extensions, so
SHA-256 runs its software rounds (the response cache's key, a client key's
hash: several times the instructions a native SHA-NI run takes), and a
`rep movsb` copy counts an instruction per byte, so large copies read high;
cache misses and the kernel's socket work are not in it."""
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h
from variants import VARIANTS, MODEL, CLIENT, uses_sink

WARMUP = 300
# Frames a thread or a task runs under: callgrind puts the whole of what
# ran beneath them since the counters were zeroed in their own cost.
ENTRY = re.compile(r"thread_start|start_thread|^clone$|call_once\{\{vtable.shim\}\}|__rust_begin_short_backtrace"
                   r"|blocking::pool::Inner::run|Core<T,S>::poll|Harness<T,S>::poll|task::raw::poll|block_on")


def functions(cg):
    """(total, {function: own instructions}) of a callgrind file."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--tree=none", "--auto=no",
                          "--threshold=100", cg], capture_output=True, text=True, check=True).stdout
    own, total = collections.Counter(), 0
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not m:
            continue
        v = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = v
            continue
        name = re.sub(r" \[.*\]$", "", m.group(2))
        if not name.startswith("<"):
            name = re.sub(r"^[^:]*:", "", name)
        name = re.sub(r"'\d+$", "", re.sub(r" \([\d,]+x\)$", "", name))
        if not ENTRY.search(name):
            own[name[:150]] += v
    return total, own


def column(n, d, variants, requests, keep):
    work = tempfile.mkdtemp(prefix="instr-")
    ports = {k: h.free_port() for k in ["mock", "sink", f"apiproxy_{n}", f"metrics_{n}"]}
    ports["mock_slow"] = ports["mock"]
    sv = h.Servers(d, work)
    cg = str(Path(keep or work) / f"{n}.callgrind")
    try:
        sv.start("mock", [Path(d) / "bench-mock", "--listen", f"127.0.0.1:{ports['mock']}",
                          "--threads", "1", "--events", "200"], ports["mock"])
        if uses_sink(variants):
            sv.start("sink", [Path(d) / "bench-mock", "--listen", f"127.0.0.1:{ports['sink']}",
                              "--threads", "1"], ports["sink"])
        text = h.apiproxy_config(ports, work, f"apiproxy_{n}", f"metrics_{n}")
        for v in variants:
            text = VARIANTS[v](text, work, n, ports)
        conf = Path(work) / f"{n}.yaml"
        conf.write_text(text)
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        p = sv.start(f"apiproxy_{n}", ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg}",
                                       Path(d) / "apiproxy", "-c", str(conf)],
                     ports[f"apiproxy_{n}"], env=env, timeout=180)
        model = next((MODEL[v] for v in variants if v in MODEL), "bench-model")
        path, body = next((CLIENT[v] for v in variants if v in CLIENT), ("/v1/chat/completions", h.chat_body))
        url = f"http://127.0.0.1:{ports[f'apiproxy_{n}']}{path}"

        def send(k):
            r = subprocess.run(["oha", "--no-tui", "--output-format", "json", "-n", str(k), "-c", "4",
                                "-m", "POST", "-T", "application/json", "-d", body(model),
                                "-H", "Authorization: Bearer " + h.CLIENT_KEY, url],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"oha failed: {r.stderr.strip()[:300]}")
            codes = json.loads(r.stdout).get("statusCodeDistribution", {})
            bad = sum(v for c, v in codes.items() if not str(c).startswith("2"))
            if bad:
                raise SystemExit(f"{n}: {bad} of {k} requests were not answered 2xx: {codes}")
        send(WARMUP)
        time.sleep(1.0)
        subprocess.run(["callgrind_control", "-z", str(p.pid)], check=True, capture_output=True)
        send(requests)
        time.sleep(1.5)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    finally:
        sv.stop()
    # The dump after zeroing is the file's first part.
    return functions(cg + ".1")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    requests = int(sys.argv[1])
    keep = os.environ.get("INSTR_KEEP")
    top = int(os.environ.get("INSTR_TOP", "0"))
    cols = []
    for a in sys.argv[2:]:
        n, spec = a.split("=", 1)
        d, _, vs = spec.partition(":")
        variants = [v for v in vs.split("+") if v]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"unknown variants: {unknown}")
        cols.append((n, column(n, d, variants, requests, keep)))
    (bn, (bt, bown)) = cols[0]
    for n, (t, own) in cols:
        print(f"{n:14s} instructions per request {t / requests:10.0f}  ÷ {bn} {t / bt:6.4f}")
    if os.environ.get("INSTR_JSON"):
        Path(os.environ["INSTR_JSON"]).write_text(json.dumps({n: t / requests for n, (t, _) in cols}))
    for n, (t, own) in cols[1:] if top else []:
        print(f"\n{n} - {bn}, own instructions per request, the {top} functions that differ most:")
        diff = {k: own[k] - bown[k] for k in set(own) | set(bown)}
        for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
            print(f"  {v / requests:+9.1f}  {own[k] / requests:9.1f} {bown[k] / requests:9.1f}  {k}")


if __name__ == "__main__":
    main()
