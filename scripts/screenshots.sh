#!/usr/bin/env bash
# Regenerates the screenshots in docs/img/ with headless Chromium:
#
#   docs/img/report.png     `moescope report` of a simulated Qwen3-30B-A3B window in which
#                           Hebrew's deep layers collapsed, against the same model before it
#   docs/img/live-page.png  the live page at `/` of `moescope demo --simulate` during the collapse
#
# Usage: bash scripts/screenshots.sh   (about a minute; installs chromium when missing, see
# scripts/browser.sh). Each PNG is kept under 500 KB.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/browser.sh

WIDTH=1280
HEIGHT=${MOESCOPE_SCREENSHOT_HEIGHT:-2400}
MAX_BYTES=$((500 * 1024))
OUT=docs/img
mkdir -p "$OUT"

echo "== building moescope"
cargo build -q -p moescope-cli --locked
BIN=target/debug/moescope

WORK="$(mktemp -d)"
DEMO_PID=""
cleanup() {
  if [ -n "$DEMO_PID" ]; then kill "$DEMO_PID" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Starts the simulated demo (extra flags: "$@"), sets ADDR, waits until /v1/snapshot answers.
start_demo() {
  "$BIN" demo --simulate --quiet --listen 127.0.0.1:0 --seed 7 \
    --mix en=0.8,he=0.1,ja=0.1 --steps-per-second 50 "$@" \
    >"$WORK/demo.out" 2>"$WORK/demo.err" &
  DEMO_PID=$!
  ADDR=""
  for _ in $(seq 1 100); do
    ADDR="$(sed -n 's|.*http://\([0-9.:]*\)/metrics.*|\1|p' "$WORK/demo.out" | head -1)"
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "error: the demo did not start:" >&2; cat "$WORK/demo.err" >&2; exit 1; }
}

stop_demo() {
  kill "$DEMO_PID" 2>/dev/null || true
  wait "$DEMO_PID" 2>/dev/null || true
  DEMO_PID=""
}

fetch() { # fetch URL FILE: GET over loopback with bash's /dev/tcp (no curl needed)
  local url="$1" file="$2" hostport path
  hostport="${url#http://}"; path="/${hostport#*/}"; hostport="${hostport%%/*}"
  exec 3<>"/dev/tcp/${hostport%:*}/${hostport#*:}"
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hostport" >&3
  # The body follows the first empty line.
  sed '1,/^\r$/d' <&3 >"$file"
  exec 3<&-
}

shot() { # shot URL PNG
  local url="$1" png="$2"
  "$MOESCOPE_CHROMIUM" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-dev-shm-usage --hide-scrollbars \
    --host-resolver-rules="MAP * ~NOTFOUND , EXCLUDE 127.0.0.1" \
    --user-data-dir="$WORK/profile-$RANDOM" --window-size="$WIDTH,$HEIGHT" \
    --screenshot="$png" "$url" >/dev/null 2>&1
  local size
  size=$(stat -c %s "$png")
  if [ "$size" -gt "$MAX_BYTES" ]; then
    echo "error: $png is $size bytes (over $MAX_BYTES): lower MOESCOPE_SCREENSHOT_HEIGHT" >&2
    exit 1
  fi
  echo "   $png: $size bytes"
}

echo "== the window before the collapse (the base) and during it (the candidate)"
start_demo --collapse-at 1000
sleep 8
fetch "http://$ADDR/v1/snapshot" "$WORK/base.json"
stop_demo
start_demo --collapse-at 0 --recover-at 0
# Until the window holds enough deep-layer tokens, the verdict is "undecided".
for _ in $(seq 1 60); do
  fetch "http://$ADDR/" "$WORK/page.html"
  grep -q 'data-lang="he" data-verdict="collapsed"' "$WORK/page.html" && break
  sleep 0.5
done
grep -q 'data-lang="he" data-verdict="collapsed"' "$WORK/page.html" || {
  echo "error: the live page never flagged the simulated collapse" >&2; exit 1; }
sleep 2
fetch "http://$ADDR/v1/snapshot" "$WORK/candidate.json"

echo "== screenshots"
shot "http://$ADDR/" "$OUT/live-page.png"
stop_demo
"$BIN" report "$WORK/candidate.json" --diff "$WORK/base.json" --reference en \
  --title "moescope report: simulated Qwen3-30B-A3B, Hebrew deep-layer collapse" \
  -o "$WORK/report.html"
shot "file://$WORK/report.html" "$OUT/report.png"
