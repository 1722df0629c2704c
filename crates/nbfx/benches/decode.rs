//! Criterion benchmarks: decode and encode throughput on the recorded envelopes.
//!
//! `cargo bench -p ferry-nbfx`. The documents are every SizedEnvelope of the net.tcp recordings
//! in `interop/recordings` (string table stripped; each direction's final session dictionary
//! resolves all its ids). Cross-implementation figures: `interop/bench/compare.sh`.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferry_nbfx::{Document, Limits, Reader, SessionDictionary};

struct Corpus {
    /// (direction index, document bytes)
    docs: Vec<(usize, Vec<u8>)>,
    sessions: Vec<SessionDictionary>,
}

fn mb31(b: &[u8], pos: &mut usize) -> usize {
    let mut v = 0usize;
    for i in 0..5 {
        let byte = b[*pos];
        *pos += 1;
        v |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            break;
        }
    }
    v
}

fn corpus() -> Corpus {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/recordings");
    let mut docs = Vec::new();
    let mut sessions = Vec::new();
    for session in ["tcp-session", "tcp-oneway", "tcp-fault", "pynettcp-mex"] {
        for dir in ["client_to_server.bin", "server_to_client.bin"] {
            let s = std::fs::read(root.join(session).join(dir))
                .expect("recordings are in the repository");
            let mut dict = SessionDictionary::new(&Limits::default());
            let mut pos = 0;
            while pos < s.len() {
                let t = s[pos];
                pos += 1;
                match t {
                    0x00 => pos += 2,
                    0x01 | 0x03 => pos += 1,
                    0x02 | 0x04 | 0x08 | 0x09 => {
                        let n = mb31(&s, &mut pos);
                        pos += n;
                    }
                    0x06 => {
                        let n = mb31(&s, &mut pos);
                        let payload = &s[pos..pos + n];
                        let table = dict.read_table(payload).expect("recorded tables are valid");
                        docs.push((sessions.len(), payload[table..].to_vec()));
                        pos += n;
                    }
                    _ => {}
                }
            }
            sessions.push(dict);
        }
    }
    Corpus { docs, sessions }
}

fn bench(c: &mut Criterion) {
    let corpus = corpus();
    let total: usize = corpus.docs.iter().map(|(_, d)| d.len()).sum();
    let trees: Vec<Document> = corpus
        .docs
        .iter()
        .map(|(s, d)| {
            Document::decode_with(d, Some(&corpus.sessions[*s]), Limits::default()).expect("valid")
        })
        .collect();
    let mut group = c.benchmark_group("recorded-envelopes");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("reader", |b| {
        b.iter(|| {
            for (s, d) in &corpus.docs {
                for r in Reader::with_session(d, &corpus.sessions[*s]) {
                    black_box(r.expect("valid"));
                }
            }
        });
    });
    group.bench_function("document-decode", |b| {
        b.iter(|| {
            for (s, d) in &corpus.docs {
                black_box(
                    Document::decode_with(d, Some(&corpus.sessions[*s]), Limits::default())
                        .expect("valid"),
                );
            }
        });
    });
    group.bench_function("decode-to-xml-text", |b| {
        b.iter(|| {
            for (s, d) in &corpus.docs {
                let doc = Document::decode_with(d, Some(&corpus.sessions[*s]), Limits::default())
                    .expect("valid");
                black_box(doc.to_xml());
            }
        });
    });
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(total);
        b.iter(|| {
            out.clear();
            for doc in &trees {
                doc.encode(&mut out, None).expect("valid");
            }
            black_box(out.len());
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
