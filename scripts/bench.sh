#!/usr/bin/env bash
# Builds the gateway and the benchmark in release mode and runs the relay benchmark:
# direct loopback TCP vs the gateway's ws and wss relays (throughput, round trip,
# connection rate, idle memory per connection).
#
#   scripts/bench.sh                    # full run, a few minutes
#   scripts/bench.sh --quick            # under a minute
#   scripts/bench.sh --json bench.json  # also write the figures as JSON
#
# Numbers from 2 shared cores move with whatever else runs: check the load average the
# benchmark prints, and rerun on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked -p ferry-cli -p ferry-bench

# 2,000 idle relayed connections take ~4,000 descriptors in the gateway; relay-bench raises
# its soft limit to the hard one itself, this only helps where the hard limit is higher.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec target/release/relay-bench "$@"
