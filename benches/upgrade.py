#!/usr/bin/env python3
"""Zero-loss upgrade and reload under load (run by benches/run.sh, part of
`make bench`; alone: `BENCH_ONLY=upgrade benches/run.sh`).

On loopback only: bench-mock (chat completions at once, 2-second streams of
20 events 100 ms apart) behind apiproxy (release build). Each round runs
keep-alive load with oha (BENCH_UPGRADE_RATE req/s over BENCH_UPGRADE_CONNS
connections, open loop) plus BENCH_UPGRADE_STREAMS concurrent stream clients
(each runs one 2-second stream after another on its own kept-alive
connection), and during it either

  - upgrades the binary as an operator does: `apiproxy -u` (waiting for the
    upgrade socket), then SIGQUIT to the running process, which hands over its
    sockets, accepts for Pingora's 5 s window, drains for
    grace_period_seconds and exits; the round ends after it exited. Rounds
    run back to back, so BENCH_UPGRADES upgrades happen in a row, each new
    process being the next one's old process;
  - or sends SIGHUP (config reload) BENCH_RELOAD_SIGNALS times.

Per round it reports requests sent (oha), answered (2xx), failed (non-2xx
and connection errors; requests cut by oha's own deadline at the end of a
round are the client's doing and listed apart), streams started, completed
(200, every event, `[DONE]`) and broken, and the old process's exit status.
Writes benches/results/upgrade-latest.{md,json} and a time-stamped copy.
Nothing here asserts a number: tests/upgrade_and_reload.rs has the bounded versions
that do.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS, free_port, log, machine, wait_port  # noqa: E402

UPGRADES = int(os.environ.get("BENCH_UPGRADES", "10"))
RELOADS = int(os.environ.get("BENCH_RELOADS", "3"))
RELOAD_SIGNALS = int(os.environ.get("BENCH_RELOAD_SIGNALS", "3"))
RATE = int(os.environ.get("BENCH_UPGRADE_RATE", "1000"))
CONNS = int(os.environ.get("BENCH_UPGRADE_CONNS", "32"))
STREAMS = int(os.environ.get("BENCH_UPGRADE_STREAMS", "100"))
GRACE = int(os.environ.get("BENCH_UPGRADE_GRACE", "4"))
KEY = "sk-bench-upgrade-key-0001"
ACCEPT_WINDOW = 5  # Pingora 0.9.1's fixed accept window after SIGQUIT


def config(port, mock_port, work):
    return f"""# written by benches/upgrade.py
server:
  listen: 127.0.0.1:{port}
  threads: 2
  pid_file: {work}/apiproxy.pid
  upgrade_sock: {work}/upgrade.sock
  grace_period_seconds: {GRACE}
  graceful_shutdown_timeout_seconds: 2
log:
  level: info
auth:
  keys:
    - {{ name: bench, key: {KEY} }}
providers:
  - {{ id: mock, kind: openai, base_url: "http://127.0.0.1:{mock_port}", api_keys: [sk-up-1], models: [bench-model] }}
"""


def body(stream):
    b = {"model": "bench-model", "max_tokens": 64,
         "messages": [{"role": "user", "content": "Say hello in one sentence."}]}
    if stream:
        b["stream"] = True
    return json.dumps(b, separators=(",", ":"))


class Streams:
    """`n` clients, each running 2-second streams back to back on its own
    kept-alive connection, until stopped."""

    def __init__(self, port, n):
        self.port, self.n = port, n
        self.lock = threading.Lock()
        self.started = self.completed = self.broken = 0
        self.errors = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(n)]

    def snapshot(self):
        with self.lock:
            return (self.started, self.completed, self.broken)

    def client(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        payload = body(True)
        headers = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
        while not self.stop.is_set():
            with self.lock:
                self.started += 1
            try:
                conn.request("POST", "/v1/chat/completions", payload, headers)
                r = conn.getresponse()
                data = r.read()
                ok = r.status == 200 and data.count(b"data: ") >= 15 and b"[DONE]" in data
                if r.will_close:
                    conn.close()
                err = None if ok else f"status {r.status}, {len(data)} bytes"
            except Exception as e:  # a broken stream, whatever broke it
                conn.close()
                ok, err = False, repr(e)
            with self.lock:
                if ok:
                    self.completed += 1
                else:
                    self.broken += 1
                    if len(self.errors) < 10:
                        self.errors.append(err)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=40)


def oha_start(port, seconds, out):
    args = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(CONNS),
            "-q", str(RATE), "--latency-correction", "-m", "POST", "-T", "application/json",
            "-d", body(False), "-H", "Authorization: Bearer " + KEY,
            f"http://127.0.0.1:{port}/v1/chat/completions"]
    return subprocess.Popen(args, stdout=open(out, "w"), stderr=subprocess.PIPE, text=True)


def oha_result(proc, out):
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"oha failed ({proc.returncode}): {err.strip()[:500]}")
    raw = json.loads(Path(out).read_text())
    codes = raw.get("statusCodeDistribution", {}) or {}
    dist = raw.get("errorDistribution") or {}
    ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
    non2xx = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    cut = sum(v for k, v in dist.items() if "deadline" in k)
    errors = {k: v for k, v in dist.items() if "deadline" not in k}
    return {"sent": ok + non2xx + sum(errors.values()), "answered": ok,
            "failed": non2xx + sum(errors.values()), "cut_by_oha_deadline": cut,
            "rps": raw.get("summary", {}).get("requestsPerSec"), "error_kinds": errors}


class Gateway:
    def __init__(self, bin_dir, work, port):
        self.bin, self.work, self.port = Path(bin_dir) / "apiproxy", Path(work), port
        self.conf = self.work / "apiproxy.yaml"
        self.generation = 0
        self.env = dict(os.environ, RUST_LOG="info")

    def spawn(self, upgrade):
        self.generation += 1
        logf = open(self.work / f"apiproxy-{self.generation}.log", "wb")
        args = [str(self.bin)] + (["-u"] if upgrade else []) + ["-c", str(self.conf)]
        return subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, env=self.env, cwd=self.work)


def run_round(kind, gw, current, streams, n):
    """One round of load; returns (row, process now serving)."""
    seconds = 1 + ACCEPT_WINDOW + GRACE + 3 if kind == "upgrade" else 2 + RELOAD_SIGNALS
    out = gw.work / f"oha-{kind}-{n}.json"
    s0 = streams.snapshot()
    oha = oha_start(gw.port, seconds, out)
    t0 = time.time()
    time.sleep(1.0)
    row = {"round": f"{kind} {n}"}
    if kind == "upgrade":
        sock = gw.work / "upgrade.sock"
        if sock.exists():
            sock.unlink()
        new = gw.spawn(upgrade=True)
        end = time.time() + 20
        while not sock.exists():
            if time.time() > end or new.poll() is not None:
                raise SystemExit(f"the new apiproxy never listened on {sock}")
            time.sleep(0.02)
        current.send_signal(signal.SIGQUIT)
        quit_at = time.time()
        status = current.wait(timeout=ACCEPT_WINDOW + GRACE + 30)
        row.update(old_pid=current.pid, new_pid=new.pid, old_exit=status,
                   old_exit_after_s=round(time.time() - quit_at, 1))
        current = new
    else:
        for _ in range(RELOAD_SIGNALS):
            current.send_signal(signal.SIGHUP)
            time.sleep(1.0)
        row.update(old_pid=current.pid, new_pid=current.pid, old_exit=None, old_exit_after_s=None)
    row.update(oha_result(oha, out))
    # Streams that were running when the round ended finish in the next one.
    s1 = streams.snapshot()
    row.update(streams_started=s1[0] - s0[0], streams_completed=s1[1] - s0[1],
               streams_broken=s1[2] - s0[2], seconds=round(time.time() - t0, 1))
    return row, current


def render(res):
    m = res["machine"]
    p = res["params"]
    L = [f"apiproxy upgrade / reload under load — {m['date']}",
         f"machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; {m['oha']}",
         f"load per round: oha {p['rate']} req/s open loop over {p['conns']} keep-alive connections "
         f"+ {p['streams']} concurrent 2-second streams; grace_period_seconds {p['grace']}; "
         f"Pingora accept window {ACCEPT_WINDOW} s",
         "",
         "| round | old pid → new pid | sent | answered | failed | cut by oha deadline | streams started | completed | broken | old exit (after SIGQUIT) |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["rounds"]:
        exit_s = "–" if r["old_exit"] is None else f"{r['old_exit']} ({r['old_exit_after_s']} s)"
        L.append(f"| {r['round']} | {r['old_pid']} → {r['new_pid']} | {r['sent']:,} | {r['answered']:,} | "
                 f"{r['failed']:,} | {r['cut_by_oha_deadline']:,} | {r['streams_started']:,} | "
                 f"{r['streams_completed']:,} | {r['streams_broken']:,} | {exit_s} |")
    t = res["totals"]
    L.append(f"| **total** | | {t['sent']:,} | {t['answered']:,} | {t['failed']:,} | {t['cut']:,} | "
             f"{t['streams_started']:,} | {t['streams_completed']:,} | {t['streams_broken']:,} | |")
    L.append("")
    L.append(f"Streams still open when the last round ended, completed afterwards: {t['tail_completed']:,}, "
             f"broken: {t['tail_broken']:,}.")
    if res["errors"]:
        L.append("")
        L.append("Errors seen: " + "; ".join(res["errors"]))
    return "\n".join(L) + "\n"


def main():
    bin_dir = sys.argv[1] if len(sys.argv) > 1 else "target/release"
    work = Path(tempfile.mkdtemp(prefix="apiproxy-upgrade-bench-"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    mock_port, port = free_port(), free_port()
    mock = subprocess.Popen([str(Path(bin_dir) / "bench-mock"), "--listen", f"127.0.0.1:{mock_port}",
                             "--threads", "2", "--events", "20", "--interval-ms", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = Gateway(bin_dir, work, port)
    gw.conf.write_text(config(port, mock_port, work))
    current = None
    streams = None
    res = {"machine": machine(), "params": {"rate": RATE, "conns": CONNS, "streams": STREAMS, "grace": GRACE,
                                            "upgrades": UPGRADES, "reloads": RELOADS}, "rounds": []}
    try:
        wait_port(mock_port, mock, "bench-mock")
        current = gw.spawn(upgrade=False)
        wait_port(port, current, "apiproxy")
        streams = Streams(port, STREAMS)
        streams.start()
        time.sleep(2.5)  # every stream client has one stream under way
        for n in range(1, RELOADS + 1):
            log(f"reload round {n}/{RELOADS}")
            row, current = run_round("reload", gw, current, streams, n)
            res["rounds"].append(row)
        for n in range(1, UPGRADES + 1):
            log(f"upgrade {n}/{UPGRADES}")
            row, current = run_round("upgrade", gw, current, streams, n)
            log(f"  sent {row['sent']}, failed {row['failed']}, streams broken {row['streams_broken']}, "
                f"old exit {row['old_exit']}")
            res["rounds"].append(row)
        before = streams.snapshot()
        streams.finish()
        after = streams.snapshot()
        res["errors"] = streams.errors + [f"{k}: {v}" for r in res["rounds"] for k, v in r["error_kinds"].items()]
    finally:
        if streams:
            streams.stop.set()
        for p in (current, mock):
            if p and p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    rounds = res["rounds"]
    res["totals"] = {
        "sent": sum(r["sent"] for r in rounds), "answered": sum(r["answered"] for r in rounds),
        "failed": sum(r["failed"] for r in rounds), "cut": sum(r["cut_by_oha_deadline"] for r in rounds),
        "streams_started": sum(r["streams_started"] for r in rounds),
        "streams_completed": sum(r["streams_completed"] for r in rounds),
        "streams_broken": sum(r["streams_broken"] for r in rounds),
        "tail_completed": after[1] - before[1], "tail_broken": after[2] - before[2],
    }
    table = render(res)
    print(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in ("upgrade-latest", f"upgrade-{stamp}"):
        (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(table)
    log(f"written to {RESULTS}/upgrade-latest.md (logs in {work})")


if __name__ == "__main__":
    main()
