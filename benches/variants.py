"""The config variants of benches/ab.py and benches/instructions.py: each
turns the config benches/harness.py::apiproxy_config writes into the one a
column measures (the list and what each does: benches/ab.py's usage)."""
from pathlib import Path

import harness as h


def rule_dir(work, name, files):
    d = Path(work) / f"filters-{name}"
    d.mkdir(exist_ok=True)
    for f, text in files.items():
        (d / f).write_text(text)
    return f"filters_dir: {d}\n"


def traced(ratio):
    """A variant tracing at `sample_ratio` `ratio` to the OTLP sink."""
    return lambda t, w, n, ports: ("telemetry:\n  otlp:\n"
                                   f"    endpoint: http://127.0.0.1:{ports['sink']}\n"
                                   f"    sample_ratio: {ratio}\n") + t


def uses_sink(variants):
    """Whether any of `variants` traces (then the OTLP sink is started)."""
    return any(v.startswith("trace") for v in variants)


PAYLOAD = ("payload:\n"
           "  default:\n    - models: [\"*\"]\n      params: { temperature: 0.2 }\n"
           "  override:\n    - models: [\"*\"]\n      params: { \"messages.0.content\": overridden }\n"
           "  filter:\n    - models: [\"*\"]\n      params: [top_p]\n")
HEADERS = "headers:\n  - set: { x-bench: \"1\" }\n"


def replaced(text, old, new):
    if old not in text:
        raise SystemExit(f"benches: the harness config changed, {old!r} not found")
    return text.replace(old, new, 1)


# variant: (config text, work dir, column name, the run's ports) -> config text;
# and the model it asks for.
VARIANTS = {
    "nocollect": lambda t, w, n, ports: "console:\n  collect: false\n" + t,
    "ring10": lambda t, w, n, ports: "console:\n  recent_requests: 10\n" + t,
    "nolog": lambda t, w, n, ports: replaced(t, "log:\n  level: info\n", "log:\n  level: warn\n"),
    "jsonlog": lambda t, w, n, ports: replaced(t, "log:\n  level: info\n", "log:\n  level: info\n  access_format: json\n"),
    "budget": lambda t, w, n, ports: replaced(t, f"{{ name: bench, key: {h.CLIENT_KEY} }}",
                                       f"{{ name: bench, key: {h.CLIENT_KEY}, budget_usd: 1000000000 }}"),
    "rate": lambda t, w, n, ports: replaced(t, f"{{ name: bench, key: {h.CLIENT_KEY} }}",
                                     f"{{ name: bench, key: {h.CLIENT_KEY}, rpm: 1000000000, tpm: 1000000000000 }}"),
    "ratebudget": lambda t, w, n, ports: replaced(t, f"{{ name: bench, key: {h.CLIENT_KEY} }}",
                                           f"{{ name: bench, key: {h.CLIENT_KEY}, rpm: 1000000000, tpm: 1000000000000, budget_usd: 1000000000 }}"),
    "rules": lambda t, w, n, ports: rule_dir(w, n, {"payload.yaml": PAYLOAD}) + t,
    "header": lambda t, w, n, ports: rule_dir(w, n, {"headers.yaml": HEADERS}) + t,
    "logical": lambda t, w, n, ports: t,
    # bench-logical is the config's last model: these lines are its keys.
    "hedge": lambda t, w, n, ports: replaced(t, "      - { provider: mock2, model: bench-model }\n",
                                      "      - { provider: mock2, model: bench-model }\n"
                                      "    hedge_after_ms: 60000\n    hedge_non_stream: true\n"),
    "cachemiss": lambda t, w, n, ports: "cache:\n  max_entry_bytes: 16\n" + replaced(
        t, "      - { provider: mock2, model: bench-model }\n",
        "      - { provider: mock2, model: bench-model }\n    cache_ttl_seconds: 3600\n"),
    "cachehit": lambda t, w, n, ports: replaced(t, "      - { provider: mock2, model: bench-model }\n",
                                          "      - { provider: mock2, model: bench-model }\n"
                                          "    cache_ttl_seconds: 3600\n"),
    "trace": traced("1"),
    "trace0": traced("0"),
    "trace05": traced("0.05"),
    "noprice": lambda t, w, n, ports: replaced(t, ", pricing: { bench-model: { input: 0.01, output: 0.01 } }", ""),
    "anthropic": lambda t, w, n, ports: t,
    "long": lambda t, w, n, ports: t,
}
# Variants whose requests are another client format: (path, body of a model).
def long_body(model, stream=False):
    """A chat request of about 4 KiB: a conversation of 38 short turns (the
    harness's body is one turn, 107 bytes)."""
    turns = [{"role": "user" if i % 2 == 0 else "assistant",
              "content": f"Turn {i}: what is the weather in Paris today, and should I take an umbrella?"}
             for i in range(38)]
    b = {"model": model, "max_tokens": 64, "messages": turns}
    if stream:
        b["stream"] = True
    return h.json.dumps(b, separators=(",", ":"))


CLIENT = {"anthropic": ("/v1/messages", h.messages_body),
          "long": ("/v1/chat/completions", long_body)}
MODEL = {"logical": "bench-logical", "hedge": "bench-logical",
         "cachemiss": "bench-logical", "cachehit": "bench-logical"}
