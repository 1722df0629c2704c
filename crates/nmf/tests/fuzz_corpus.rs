//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/session`) through the fuzz target's code.

use ferry_nmf::{ClientConfig, Limits, Session};

/// The body of `fuzz/fuzz_targets/session.rs`.
fn target(data: &[u8]) {
    let mut server = Session::server(Limits::default());
    let _ = server.handle_input(data);
    if let Ok(mut client) =
        Session::client(ClientConfig::net_tcp("net.tcp://fuzz/"), Limits::default())
    {
        let _ = client.handle_input(data);
    }
}

#[test]
fn corpus_replays() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/session");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        target(&data);
        for cut in 0..data.len().min(64) {
            target(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 8, "corpus has {n} files");
}
