#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need (apt, npm, PyPI),
# then runs formatting, lints, every test (including those against real foreign peers),
# doc tests, docs, and the architecture checks. Fails loudly on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A clean build needs no incremental caches: they would more than double the target's size.
export CARGO_INCREMENTAL=0

# The debug build of the workspace and its tests takes about 5 GiB; say so up front rather
# than fail half-way through a link with "No space left on device". What an earlier build
# left in the target directory counts towards it.
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_kib=$(df -Pk "$target_dir" | awk 'NR == 2 { print $4 }')
built_kib=$(du -sk "$target_dir" | cut -f1)
need_kib=$((8 * 1024 * 1024 - built_kib))
if ((free_kib < need_kib)); then
  echo "error: only $((free_kib / 1024)) MiB free under $target_dir; the build needs about $((need_kib / 1024)) MiB more" >&2
  exit 1
fi

step "system packages"
missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v curl >/dev/null || missing+=(curl)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v slowhttptest >/dev/null || missing+=(slowhttptest)
command -v mcs >/dev/null || missing+=(mono-complete)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v python3 >/dev/null || missing+=(python3 python3-pip)
# etcd for the cluster tests, which start their own 3-member clusters on loopback (etcdctl
# turns authentication on for the secured one).
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
# HAProxy, the load balancer whose PROXY protocol (v1, v2) and X-Forwarded-For the gateway
# is tested behind.
command -v haproxy >/dev/null || missing+=(haproxy)
# Debian's Chromium for the status page's test (driven headless by npm playwright-core).
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

step "npm packages (hyco-ws, hyco-https)"
(cd interop/node && npm ci --no-audit --no-fund --loglevel=error)

step "PyPI packages (wcf, grpcio, kosoku)"
python3 -m pip install --quiet --disable-pip-version-check -r interop/requirements.txt

if ! cargo nextest --version >/dev/null 2>&1; then
  step "cargo-nextest"
  cargo install --locked cargo-nextest
fi

step "format"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo nextest run --workspace --locked --profile ci

step "doc tests"
cargo test --doc --workspace --locked

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "protocol crates, the WCF runtime and codegen stay sans-I/O (no tokio)"
for crate in ferry-hc ferry-mb31 ferry-nbfx ferry-nmf ferry-soap ferry-wcf ferry-codegen; do
  # ferry-wcf's service host and client channels (tokio) sit behind its default `runtime`
  # feature; without default features it must be the sans-I/O runtime alone.
  features=()
  [[ $crate == ferry-wcf ]] && features=(--no-default-features)
  if cargo tree -e normal -p "$crate" "${features[@]}" --locked --prefix none | grep -q '^tokio '; then
    echo "error: $crate depends on tokio" >&2
    exit 1
  fi
  cargo check -p "$crate" --no-default-features --locked --quiet
done

step "benches compile"
# The bench targets (criterion benches, relay-bench) built in the test profile, which shares
# the artifacts above; a release build here would double CI time for no extra check.
cargo build --workspace --benches --bins --locked --quiet

echo
echo "all checks passed"
