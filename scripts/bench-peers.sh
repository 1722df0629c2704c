#!/usr/bin/env bash
# Ferry's port bridge against the self-hosted tunnels, in one run on this machine: iperf3
# bulk throughput (1 and 8 streams, median of 3) in the same topology for each,
#
#   iperf3 client ── tunnel's public port ── server side ── agent ── iperf3 server
#
# direct loopback first, then bore and rathole (crates.io, cargo install), frp and chisel
# (Go module proxy, go install), and `ferry bridge local` → gateway → `ferry bridge remote`
# over ws and wss. Ferry's bridges ask for raw streams, so the gateway splices their bytes;
# FERRY_BEFORE=path/to/an/older/ferry adds that binary's rows for a before/after in the same
# run. Each figure is also given as a share of direct.
#
#   scripts/bench-peers.sh                 # about 5 minutes once the peers are built
#   SECONDS_PER_RUN=10 scripts/bench-peers.sh
#
# The peers are built into target/peers (never committed); one that cannot be installed is
# reported as such and left out of the table.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
RUNS="${RUNS:-3}"
PEERS="$PWD/target/peers"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

need() { command -v "$1" >/dev/null || { echo "bench-peers: $1 is missing ($2)" >&2; exit 1; }; }
need iperf3 "apt-get install iperf3"
need python3 "the report is computed with it"

echo "== building ferry (release)" >&2
cargo build --release --locked -p ferry-cli >&2
FERRY="$PWD/target/release/ferry"

mkdir -p "$PEERS/bin"
export PATH="$PEERS/bin:$PATH"
install_peer() { # name, command to check, install command...
  local name=$1 check=$2; shift 2
  if command -v "$check" >/dev/null; then return 0; fi
  echo "== installing $name" >&2
  if ! "$@" >"$WORK/install-$name.log" 2>&1; then
    echo "bench-peers: $name could not be installed: $(tail -n 2 "$WORK/install-$name.log" | tr '\n' ' ')" >&2
    return 1
  fi
}
have=()
install_peer bore bore cargo install --locked --root "$PEERS" bore-cli@0.6.0 && have+=(bore)
# rathole 0.5.0's own lock file pins crates that today's compiler refuses; without it, cargo
# picks their fixed semver-compatible releases.
install_peer rathole rathole cargo install --root "$PEERS" rathole@0.5.0 && have+=(rathole)
# `go install pkg@version` asks the module proxy for the module's version list, which the
# proxy here refuses; a throwaway module that requires the exact versions needs no list.
go_peer() { # binary, package, module@version
  local dir="$PEERS/go-$1"
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir" \
    && go mod init peers >/dev/null 2>&1 && go get "$2@${3#*@}" && go build -o "$PEERS/bin/$1" "$2"
  local status=$?
  cd - >/dev/null
  return $status
}
install_peer frps frps go_peer frps github.com/fatedier/frp/cmd/frps github.com/fatedier/frp@v0.61.1 \
  && install_peer frpc frpc go_peer frpc github.com/fatedier/frp/cmd/frpc github.com/fatedier/frp@v0.61.1 \
  && have+=(frp)
install_peer chisel chisel go_peer chisel github.com/jpillora/chisel github.com/jpillora/chisel@v1.10.1 \
  && have+=(chisel)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
spawn() { "$@" >>"$WORK/processes.log" 2>&1 & PIDS+=($!); }
wait_port() { # port: until something accepts on it (at most 20 s)
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-peers: nothing listens on port $1; see the processes' log:" >&2
  tail -n 20 "$WORK/processes.log" >&2
  return 1
}
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}

ORIGIN=$(free_port)
iperf3 -s -p "$ORIGIN" >"$WORK/iperf-server.log" 2>&1 &
IPERF_PID=$!
trap 'kill $IPERF_PID 2>/dev/null || true; cleanup' EXIT
wait_port "$ORIGIN"

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
measure() { # label, port
  local label=$1 port=$2 streams run mbps
  for streams in 1 8; do
    for run in $(seq "$RUNS"); do
      mbps=$(iperf3 -c 127.0.0.1 -p "$port" -t "$SECONDS_PER_RUN" -P "$streams" -J 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/8e6)' \
        || echo 0)
      printf '%s\t%s\t%s\n' "$label" "$streams" "$mbps" >>"$RESULTS"
      echo "  $label x$streams run $run: $mbps MB/s" >&2
    done
  done
}

echo "== direct" >&2
measure direct "$ORIGIN"

for peer in "${have[@]}"; do
  echo "== $peer" >&2
  PUBLIC=$(free_port)
  CONTROL=$(free_port)
  case $peer in
    bore)
      # bore's control port is fixed (7835).
      spawn bore server --min-port "$PUBLIC" --max-port "$PUBLIC"
      wait_port 7835
      spawn bore local "$ORIGIN" --to 127.0.0.1 --port "$PUBLIC"
      ;;
    rathole)
      cat >"$WORK/rathole-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$CONTROL"
[server.services.perf]
token = "bench"
bind_addr = "127.0.0.1:$PUBLIC"
nodelay = true
EOF
      cat >"$WORK/rathole-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$CONTROL"
[client.services.perf]
token = "bench"
local_addr = "127.0.0.1:$ORIGIN"
nodelay = true
EOF
      spawn rathole --server "$WORK/rathole-server.toml"
      wait_port "$CONTROL"
      spawn rathole --client "$WORK/rathole-client.toml"
      ;;
    frp)
      cat >"$WORK/frps.toml" <<EOF
bindAddr = "127.0.0.1"
bindPort = $CONTROL
EOF
      cat >"$WORK/frpc.toml" <<EOF
serverAddr = "127.0.0.1"
serverPort = $CONTROL
[[proxies]]
name = "perf"
type = "tcp"
localIP = "127.0.0.1"
localPort = $ORIGIN
remotePort = $PUBLIC
EOF
      spawn frps -c "$WORK/frps.toml"
      wait_port "$CONTROL"
      spawn frpc -c "$WORK/frpc.toml"
      ;;
    chisel)
      spawn chisel server --host 127.0.0.1 --port "$CONTROL" --reverse
      wait_port "$CONTROL"
      spawn chisel client "127.0.0.1:$CONTROL" "R:127.0.0.1:$PUBLIC:127.0.0.1:$ORIGIN"
      ;;
  esac
  if wait_port "$PUBLIC"; then
    sleep 1
    measure "$peer" "$PUBLIC"
  fi
  stop_all
done

ferry_rows() { # label prefix, ferry binary
  local prefix=$1 bin=$2 scheme plain tls ca key gateway local_port
  plain=$(free_port)
  tls=$(free_port)
  ca="$WORK/ca-$prefix.pem"
  "$bin" gateway --listen "127.0.0.1:$plain" --tls-listen "127.0.0.1:$tls" --dev-ca-out "$ca" \
    >"$WORK/gateway-$prefix.log" 2>&1 &
  PIDS+=($!)
  wait_port "$plain"
  for _ in $(seq 100); do grep -q '  key ' "$WORK/gateway-$prefix.log" && break; sleep 0.1; done
  key=$(awk '/  key /{print $2; exit}' "$WORK/gateway-$prefix.log")
  for scheme in ws wss; do
    if [ "$scheme" = ws ]; then gateway="ws://127.0.0.1:$plain"; else gateway="wss://localhost:$tls"; fi
    local_port=$(free_port)
    export FERRY_GATEWAY="$gateway" FERRY_KEY_NAME=RootManageSharedAccessKey FERRY_KEY="$key" FERRY_CA="$ca"
    spawn "$bin" bridge remote "perf-$scheme" "127.0.0.1:$ORIGIN"
    sleep 1
    spawn "$bin" bridge local "127.0.0.1:$local_port" "perf-$scheme"
    wait_port "$local_port"
    measure "$prefix $scheme" "$local_port"
  done
  stop_all
}

echo "== ferry" >&2
ferry_rows ferry "$FERRY"
if [ -n "${FERRY_BEFORE:-}" ]; then
  echo "== ferry (before: $FERRY_BEFORE)" >&2
  ferry_rows "before" "$FERRY_BEFORE"
fi

python3 - "$RESULTS" "$(nproc)" <<'EOF'
import statistics, sys
from collections import OrderedDict
rows = OrderedDict()
for line in open(sys.argv[1]):
    label, streams, mbps = line.rstrip("\n").split("\t")
    rows.setdefault(label, {}).setdefault(int(streams), []).append(float(mbps))
direct = {n: statistics.median(v) for n, v in rows["direct"].items()}
print(f"\niperf3 through each tunnel, MB/s (median of runs), share of direct; {sys.argv[2]} cores")
print(f"{'':<18}{'1 stream':>18}{'8 streams':>18}")
for label, by in rows.items():
    cells = []
    for n in (1, 8):
        m = statistics.median(by.get(n, [0]))
        cells.append(f"{m:,.0f} ({m / direct[n]:.0%})" if label != "direct" else f"{m:,.0f}")
    print(f"{label:<18}{cells[0]:>18}{cells[1]:>18}")
EOF
