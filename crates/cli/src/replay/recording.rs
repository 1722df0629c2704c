//! A recording folder: per TCP connection the bytes each way, and when each arrived.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Largest message replayed or accepted from the service (the recordings hold 1 MiB ones).
pub(super) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A recording folder.
pub(super) struct Recording {
    pub(super) connections: Vec<Connection>,
}

/// One recorded TCP connection.
pub(super) struct Connection {
    pub(super) index: u32,
    pub(super) c2s: Vec<u8>,
    pub(super) s2c: Vec<u8>,
    /// Chunks in the order the recorder saw them: (client→server?, offset, length).
    pub(super) timeline: Vec<(bool, usize, usize)>,
}

impl Recording {
    pub(super) fn open(dir: &Path) -> anyhow::Result<Self> {
        if !dir.is_dir() {
            bail!("{} is not a recording folder", dir.display());
        }
        let timeline_file = dir.join("timeline.jsonl");
        let timeline = std::fs::read_to_string(&timeline_file)
            .with_context(|| format!("reading {}", timeline_file.display()))?;
        let mut chunks: BTreeMap<u32, Vec<(bool, usize, usize)>> = BTreeMap::new();
        for (n, line) in timeline.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}", timeline_file.display(), n + 1))?;
            let (Some(conn), Some(dir), Some(offset), Some(len)) = (
                entry["conn"].as_u64(),
                entry["dir"].as_str(),
                entry["offset"].as_u64(),
                entry["len"].as_u64(),
            ) else {
                continue; // open / eof / close events
            };
            if entry.get("event").is_some() {
                continue;
            }
            chunks.entry(conn as u32).or_default().push((
                dir == "c2s",
                offset as usize,
                len as usize,
            ));
        }
        let mut connections = Vec::new();
        for index in 0u32.. {
            let prefix = if index == 0 {
                String::new()
            } else {
                format!("conn{index}.")
            };
            let c2s_file = dir.join(format!("{prefix}client_to_server.bin"));
            if !c2s_file.is_file() {
                break;
            }
            let s2c_file = dir.join(format!("{prefix}server_to_client.bin"));
            let read =
                |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            connections.push(Connection {
                index,
                c2s: read(&c2s_file)?,
                s2c: read(&s2c_file)?,
                timeline: chunks.remove(&index).unwrap_or_default(),
            });
        }
        if connections.is_empty() {
            bail!("no client_to_server.bin in {}", dir.display());
        }
        Ok(Self { connections })
    }
}

impl Connection {
    /// The position in the timeline of the chunk holding byte `at` of one direction.
    pub(super) fn seen_at(&self, c2s: bool, at: usize) -> anyhow::Result<usize> {
        self.timeline
            .iter()
            .position(|&(dir, off, len)| dir == c2s && (off..off + len).contains(&at))
            .with_context(|| {
                format!(
                    "timeline.jsonl has no {} chunk holding byte {at} of connection {}",
                    if c2s { "c2s" } else { "s2c" },
                    self.index
                )
            })
    }
}
