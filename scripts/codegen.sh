#!/usr/bin/env bash
# Regenerates the Rust modules generated from wsdl/ (the list the ferry-wcf bootstrap test checks).
set -euo pipefail
cd "$(dirname "$0")/.."
gen() { cargo run -q -p ferry-cli -- codegen "$1" -o "$2"; }
gen wsdl/calculator crates/wcf/src/generated/calculator.rs
gen wsdl/relay crates/wcf/src/generated/relay.rs
gen wsdl/fixtures/features crates/wcf/tests/generated/features.rs
