//! Fuzz target: `cargo +nightly fuzz run session -- -max_len=1048576` from `crates/nmf`. The
//! seed corpus in `corpus/session` is replayed as an ordinary test (`tests/fuzz_corpus.rs`).
//!
//! Both roles of the framing session, with the first-envelope limit the gateway uses (16 MiB),
//! under the amplification oracle: the session buffers at most what it was given, plus a
//! constant.
#![no_main]

use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = ferry_nmf::Limits {
        max_envelope_bytes: 16 << 20,
        ..ferry_nmf::Limits::default()
    };
    let before = HEAP.current_usage();
    HEAP.reset_peak_usage();
    let mut server = ferry_nmf::Session::server(limits);
    let _ = server.handle_input(data);
    while server.poll_event().is_some() {}
    let config = ferry_nmf::ClientConfig::net_tcp("net.tcp://fuzz/");
    if let Ok(mut client) = ferry_nmf::Session::client(config, limits) {
        let _ = client.handle_input(data);
        while client.poll_event().is_some() {}
    }
    let peak = HEAP.peak_usage().saturating_sub(before);
    assert!(
        peak <= 4 * data.len() + 256 * 1024,
        "{peak} heap bytes for {} input bytes",
        data.len()
    );
});
