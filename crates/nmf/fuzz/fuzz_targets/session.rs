//! Fuzz target: `cargo +nightly fuzz run session` from `crates/nmf`. The seed corpus in
//! `corpus/session` is replayed as an ordinary test (`tests/fuzz_corpus.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut server = ferry_nmf::Session::server(ferry_nmf::Limits::default());
    let _ = server.handle_input(data);
    let config = ferry_nmf::ClientConfig::net_tcp("net.tcp://fuzz/");
    if let Ok(mut client) = ferry_nmf::Session::client(config, ferry_nmf::Limits::default()) {
        let _ = client.handle_input(data);
    }
});
