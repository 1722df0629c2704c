#!/usr/bin/env bash
# gRPC benchmark: a tonic client calling the echo service directly (loopback TCP) and
# through the gateway's gRPC ingress (h2c → gateway → relayed HTTP/2 → SDK listener →
# tonic), side by side in one run: unary calls/s and p50/p99 with 1 and 64 calls in flight,
# server-streaming MB/s, relay/direct ratios, the latency the relay adds, CPU per call and
# peak RSS of each process. The client, gateway and services are separate processes.
#
#   scripts/bench-grpc.sh                               # 5 s per case after 1 s warm-up
#   scripts/bench-grpc.sh --secs 10 --warmup-secs 2     # longer windows
#   scripts/bench-grpc.sh --rounds 3                    # interleave and pool 3 rounds
#   scripts/bench-grpc.sh --inflight 1,8,64 --stream-msg 65536 --streams 4
#   scripts/bench-grpc.sh --transports relay            # one side only (e.g. under perf)
#   scripts/bench-grpc.sh --gateway-threads 1           # gateway on a current-thread runtime
#
# Lines starting with {"bench":"grpc" are the machine-readable figures, one per line.
# Numbers from 2 shared cores move with whatever else runs: check the load average the
# benchmark prints, and rerun on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p ferry-bench --bin grpc-bench

exec target/release/grpc-bench "$@"
