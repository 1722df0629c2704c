#!/usr/bin/env bash
# WCF benchmark: calls/s and p50/p99 latency of Add and of a 64 KiB ReverseBytes, with 1 and
# 16 channels, side by side in one run:
#   Mono direct  Mono's WCF client -> Mono's WCF service over net.tcp (the baseline);
#   relay        the Rust client (NetTcpChannel) -> the gateway's net.tcp front end -> SDK
#                listener -> the Rust WCF host serving the calculator;
#   Mono relay   Mono's client -> the same gateway and Rust host;
# with the relay / Mono direct ratio, CPU per call and the peak RSS of every process. The
# client, the gateway, the Rust host and the Mono processes are separate processes. Needs
# mono and mcs (apt mono-complete).
#
#   scripts/bench-wcf.sh                                  # 5 s per case after 1 s warm-up
#   scripts/bench-wcf.sh --secs 10 --warmup-secs 2
#   scripts/bench-wcf.sh --channels 1,4,16 --bytes 1024
#   scripts/bench-wcf.sh --transports relay --ops add     # one side only (e.g. under perf)
#
# Mono's net.tcp channel sleeps 50 ms before every receive (interop/recordings/FINDINGS.md
# section 2), so the baseline is about 20 calls/s per channel whatever the machine.
# Lines starting with {"bench":"wcf" are the machine-readable figures, one per line.
# Numbers from 2 shared cores move with whatever else runs: check the load average the
# benchmark prints, and rerun on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p ferry-bench --bin wcf-bench

exec target/release/wcf-bench "$@"
