#!/usr/bin/env bash
# Soak test: the real-model demo (bundled model, load generator on) scraped by a real
# Prometheus every 5 s, for MINUTES minutes (default 60). Every minute it prints the demo's
# resident memory, open file descriptors, threads, the number of series on /metrics and in
# Prometheus, and the tokens recorded so far; after warm-up all but the last should stay flat.
#
#   bash scripts/soak.sh [MINUTES] [OUTPUT.tsv]
#
# Needs `prometheus` on PATH (scripts/test.sh installs Debian's package). Loopback only;
# stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes="${1:-60}"
out="${2:-target/soak.tsv}"
port="${SOAK_PORT:-19464}"
prom_port="${SOAK_PROMETHEUS_PORT:-19090}"

cargo build --release --locked -p moescope-cli >/dev/null
bin="${CARGO_TARGET_DIR:-target}/release/moescope"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" demo --quiet --listen "127.0.0.1:$port" --rps 20 >"$work/demo.log" 2>&1 &
demo=$!
pids+=("$demo")
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 5s
scrape_configs:
  - job_name: moescope
    static_configs:
      - targets: ["127.0.0.1:$port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=("$!")

get() { # a GET on loopback with curl if present, else bash's /dev/tcp
  if command -v curl >/dev/null 2>&1; then
    curl -fsS --max-time 5 "http://127.0.0.1:$1$2"
  else
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$2" >&3
    sed '1,/^\r$/d' <&3
    exec 3>&-
  fi
}

mkdir -p "$(dirname "$out")"
printf 'minute\trss_kib\tfds\tthreads\tseries_metrics\tseries_prometheus\ttokens_total\n' | tee "$out"
for minute in $(seq 0 "$minutes"); do
  [ "$minute" -gt 0 ] && sleep 60
  kill -0 "$demo" 2>/dev/null || { echo "the demo exited:" >&2; tail -20 "$work/demo.log" >&2; exit 1; }
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$demo/status")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$demo/status")
  fds=$(ls "/proc/$demo/fd" | wc -l)
  metrics=$(get "$port" /metrics || true)
  series=$(printf '%s\n' "$metrics" | grep -c '^moe_routing_' || true)
  tokens=$(printf '%s\n' "$metrics" | awk '/^moe_routing_tokens_total/ {s += $NF} END {printf "%d", s}')
  prom=$(get "$prom_port" '/api/v1/query?query=count(%7B__name__%3D~%22moe_routing_.*%22%7D)' 2>/dev/null \
    | sed -n 's/.*"value":\[[^,]*,"\([0-9]*\)"\].*/\1/p' || true)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$minute" "$rss" "$fds" "$threads" "$series" "${prom:-?}" "$tokens" | tee -a "$out"
done
