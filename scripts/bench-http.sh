#!/usr/bin/env bash
# HTTP relaying benchmark: wrk straight to an nginx origin vs through the gateway and
# `ferry listen --http-to` (the listener side's reverse proxy), with keep-alive and with
# `Connection: close`, in one run, printing req/s and p99 side by side with their ratios.
#
#   scripts/bench-http.sh [SECONDS] [CONNECTIONS]     # defaults: 10 s, 32 connections
#
# Needs wrk and nginx (apt: wrk nginx-light); everything runs on 127.0.0.1 and stops itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}

for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (apt-get install wrk nginx-light)" >&2; exit 1; }
done
cargo build --release --locked -p ferry-cli --quiet
ferry=target/release/ferry

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
origin=$(free_port); plain=$(free_port); tls=$(free_port)

mkdir -p "$work/html" "$work/logs"
head -c 1024 /dev/zero | tr '\0' 'x' > "$work/html/index.html"
chmod -R a+rX "$work"  # nginx workers run unprivileged
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $work/logs/error.log warn;
pid $work/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$origin; root $work/html; }
}
CONF
nginx -p "$work" -c "$work/nginx.conf" & pids+=($!)

"$ferry" gateway --listen "127.0.0.1:$plain" --tls-listen "127.0.0.1:$tls" --admin-listen 127.0.0.1:0 --dev-ca-out "$work/ca.pem" > "$work/gw.out" 2> "$work/gw.err" & pids+=($!)
for _ in $(seq 100); do grep -q '  key ' "$work/gw.out" 2>/dev/null && break; sleep 0.1; done
key=$(awk '/  key /{print $2}' "$work/gw.out")
rule=RootManageSharedAccessKey
RUST_LOG=warn FERRY_KEY_NAME=$rule FERRY_KEY=$key "$ferry" listen web --http-to "http://127.0.0.1:$origin" \
  --gateway "ws://127.0.0.1:$plain" 2> "$work/listen.err" & pids+=($!)
token=$("$ferry" token --uri http://localhost/web --key-name "$rule" --key "$key")
for _ in $(seq 100); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "ServiceBusAuthorization: $token" "http://127.0.0.1:$plain/web/index.html" || true)
  [ "$code" = 200 ] && break; sleep 0.1
done
[ "$code" = 200 ] || { echo "error: relay path not ready (last status $code)" >&2; cat "$work/listen.err" >&2; exit 1; }

# Runs wrk; prints "req/s p99_ms".
run() {
  local url=$1; shift
  wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "$url" > "$work/wrk.out"
  local rps p99
  rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.out")
  p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$work/wrk.out")
  if grep -q 'Non-2xx' "$work/wrk.out"; then echo "warning: non-2xx answers: $(grep Non-2xx "$work/wrk.out")" >&2; fi
  echo "$rps $p99"
}

auth=(-H "ServiceBusAuthorization: $token")
echo "wrk -t2 -c$conns -d${secs}s, 1 KiB static file, nginx origin, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %14s %14s %14s %14s %8s\n' "" "direct req/s" "direct p99 ms" "relay req/s" "relay p99 ms" "ratio"
for mode in keep-alive close; do
  extra=()
  [ "$mode" = close ] && extra=(-H "Connection: close")
  read -r d_rps d_p99 < <(run "http://127.0.0.1:$origin/index.html" "${extra[@]}")
  read -r r_rps r_p99 < <(run "http://127.0.0.1:$plain/web/index.html" "${auth[@]}" "${extra[@]}")
  ratio=$(python3 -c "print(f'{$r_rps/$d_rps*100:.0f}%')")
  printf '%-22s %14s %14s %14s %14s %8s\n' "$mode" "$d_rps" "$d_p99" "$r_rps" "$r_p99" "$ratio"
done
