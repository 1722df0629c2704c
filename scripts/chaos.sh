#!/usr/bin/env bash
# The chaos soak for ten minutes (CI runs the same test for 20 s): checksummed WebSocket,
# HTTP and net.tcp transfers through a gateway while its listeners are killed with SIGKILL
# and restarted at random. Needs what scripts/test.sh installs (Mono for the net.tcp
# origin). FERRY_CHAOS_SECS overrides the duration.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
export FERRY_CHAOS_SECS=${FERRY_CHAOS_SECS:-600}
# The test harness's own timeout (nextest's slow-timeout) does not apply to cargo test.
exec cargo test --locked -p ferry-cli --test chaos -- --nocapture
