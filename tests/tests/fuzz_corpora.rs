//! Replays the committed fuzz corpora of the gateway (HTTP head, PROXY header, relayed
//! handshake, net.tcp credential scrub), the net.tcp boundary scanner, the WebSocket codecs
//! and the Hybrid Connections parsers through the fuzz targets' own code, under the targets'
//! memory budgets (the amplification oracle). One test: the peak heap is the process's, so
//! nothing may run beside it.

use std::path::Path;

use peak_alloc::PeakAlloc;

#[global_allocator]
static HEAP: PeakAlloc = PeakAlloc;

/// Each file of `crate_dir/fuzz/corpus/target`, with the heap `run` may take at most for its
/// size.
fn replay(
    crate_dir: &str,
    target: &str,
    budget: impl Fn(usize) -> usize,
    mut run: impl FnMut(&[u8]),
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates")
        .join(crate_dir)
        .join("fuzz/corpus")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let data = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        let before = HEAP.current_usage();
        HEAP.reset_peak_usage();
        run(&data);
        let peak = HEAP.peak_usage().saturating_sub(before);
        assert!(
            peak <= budget(data.len()),
            "{target}: {peak} heap bytes for {} input bytes",
            data.len()
        );
        files += 1;
    }
    assert!(files >= 5, "{target}: only {files} corpus files");
}

/// Runs `f` on `data` as text, when it is text (the parsers take `&str`).
fn text(data: &[u8], f: impl FnOnce(&str)) {
    if let Ok(text) = std::str::from_utf8(data) {
        f(text);
    }
}

#[test]
fn corpora_replay_within_their_budgets() {
    use ferry_gateway::fuzzing as gateway;
    use ferry_hc::fuzzing as hc;
    use ferry_net::fuzzing as net;

    // As in the targets: a paused clock, so a close nobody answers ends on its timeout.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    let linear = |k: usize| move |n: usize| k * n + 64 * 1024;
    replay("gateway", "http_head", linear(8), |d| {
        rt.block_on(gateway::http_head(d));
    });
    replay("gateway", "proxy_header", linear(8), |d| {
        rt.block_on(gateway::proxy_header(d));
    });
    // What reads binary XML holds one record at a time, a list's items read whole.
    let record = ferry_nbfx::limits::RECORD_BYTES_PER_INPUT_BYTE;
    replay("gateway", "relayed_handshake", linear(8 + record), |d| {
        rt.block_on(gateway::relayed_handshake(d));
    });
    replay(
        "nmf",
        "boundary",
        |_| 1024,
        |d| {
            if let Some((&chunk, rest)) = d.split_first() {
                ferry_nmf::fuzzing::boundary(rest, usize::from(chunk));
            }
        },
    );
    replay(
        "gateway",
        "nettcp_scrub",
        |n| (8 + record) * n + 512 * 1024,
        |d| {
            if let Some((&chunk, rest)) = d.split_first() {
                gateway::nettcp_scrub(rest, usize::from(chunk));
            }
        },
    );
    let buffered = |_| 2 * net::BUFFER + 64 * 1024;
    replay("net", "relay_frames", buffered, |d| {
        rt.block_on(net::relay_frames(d));
    });
    replay("net", "message_reader", buffered, |d| {
        rt.block_on(net::message_reader(d));
    });
    replay(
        "net",
        "ws_stream",
        |n| 4 * n + 256 * 1024,
        |d| {
            rt.block_on(net::ws_stream(d));
        },
    );
    replay("hc", "sas", linear(8), |d| text(d, hc::sas));
    replay("hc", "address", linear(16), |d| text(d, hc::address));
    replay("hc", "command", linear(16), |d| text(d, hc::command));
}
