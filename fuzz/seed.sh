#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from the translate crate's fixtures and the
# shipped configs. The first byte of a translate seed picks the format
# (0 OpenAI Chat, 1 Responses, 2 Anthropic, 3 Gemini; see common.rs).
set -euo pipefail
cd "$(dirname "$0")"
fx=../crates/translate/tests/fixtures
seed() { # target format-byte file
  local dir="corpus/$1" name
  mkdir -p "$dir"
  name="$(basename "$3")"
  { printf "\\x$(printf %02x "$2")"; cat "$3"; } >"$dir/$2-$name"
}
for f in "$fx"/openai/hand-request-*.json; do seed request_decode 0 "$f"; done
for f in "$fx"/responses/request-*.json; do seed request_decode 1 "$f"; done
for f in "$fx"/anthropic/request-*.json; do seed request_decode 2 "$f"; done
for f in "$fx"/gemini/request_*.json; do seed request_decode 3 "$f"; done
for f in "$fx"/openai/hand-response-*.json; do seed response_decode 0 "$f"; done
for f in "$fx"/responses/response-*.json; do seed response_decode 1 "$f"; done
for f in "$fx"/anthropic/response-*.json "$fx"/anthropic/error-*.json; do seed response_decode 2 "$f"; done
for f in "$fx"/gemini/response_*.json; do seed response_decode 3 "$f"; done
# Stream seeds: the second byte's bits choose the client format and the
# read size; format byte 0..3 with client bits 0 (OpenAI Chat client).
for f in "$fx"/openai/hand-stream-*.sse; do seed stream_decode 0 "$f"; seed stream_decode 8 "$f"; done
for f in "$fx"/responses/stream-*.sse; do seed stream_decode 1 "$f"; seed stream_decode 9 "$f"; done
for f in "$fx"/anthropic/stream-*.sse; do seed stream_decode 2 "$f"; seed stream_decode 6 "$f"; done
for f in "$fx"/gemini/stream_*.sse; do seed stream_decode 3 "$f"; seed stream_decode 7 "$f"; done
for f in "$fx"/*/*.sse; do seed sse_parser 7 "$f"; done
mkdir -p corpus/config
for f in ../conf/*.yaml; do cp "$f" "corpus/config/$(basename "$f")"; done
# The recorded OpenAI exchanges: request bodies, and response bodies or
# streams, pulled out of the cassettes.
python3 - "$fx"/openai/chat-*.yaml <<'PY'
import os, sys, yaml
for path in sys.argv[1:]:
    name = os.path.basename(path).rsplit(".", 1)[0]
    for i, it in enumerate(yaml.safe_load(open(path)).get("interactions", [])):
        req = (it.get("request") or {}).get("body") or ""
        resp = (it.get("response") or {}).get("body") or ""
        for target, body in (("request_decode", req),
                             ("stream_decode" if resp.lstrip().startswith("data:") else "response_decode", resp)):
            if body:
                os.makedirs(f"corpus/{target}", exist_ok=True)
                with open(f"corpus/{target}/0-{name}-{i}", "wb") as f:
                    f.write(b"\x00" + body.encode())
PY
