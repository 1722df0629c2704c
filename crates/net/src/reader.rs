//! A WebSocket client's frames, read by a server through one bounded buffer: an inline array
//! while idle, a heap buffer of a configured size only while data streams. The relay and the
//! message reader both read through it; the frame rules themselves are [`crate::frame`]'s.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::frame::{FrameError, FrameHeader, Role, apply_mask, rotate_mask};

/// Bytes an idle direction keeps inline: enough for a header and a small message, so
/// request/response traffic of small messages never touches the heap buffer.
pub(crate) const INLINE: usize = 160;

/// Why a [`FrameReader`] could not deliver the bytes asked for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FillError {
    #[error("connection lost: {0}")]
    Io(#[from] io::Error),
    /// The connection ended inside a frame.
    #[error("connection closed without a close frame")]
    Eof,
}

/// Storage for a direction: inline while idle, a heap buffer while streaming.
pub(crate) enum Store {
    Inline([u8; INLINE]),
    Heap(Box<[u8]>),
}

impl Store {
    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        match self {
            Self::Inline(a) => a,
            Self::Heap(b) => b,
        }
    }
}

/// Reads frames from a client: a buffer with `start..end` valid.
pub(crate) struct FrameReader<R> {
    src: R,
    pub(crate) store: Store,
    pub(crate) start: usize,
    end: usize,
    heap_size: usize,
    /// The last read filled all the space offered: more data is probably waiting.
    busy: bool,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(src: R, pre: &[u8], heap_size: usize) -> Self {
        let heap_size = heap_size.max(INLINE * 2);
        let mut reader = Self {
            src,
            store: Store::Inline([0; INLINE]),
            start: 0,
            end: 0,
            heap_size,
            busy: false,
        };
        if pre.len() > INLINE {
            reader.store = Store::Heap(vec![0; heap_size.max(pre.len())].into_boxed_slice());
        }
        reader.store.as_mut()[..pre.len()].copy_from_slice(pre);
        reader.end = pre.len();
        reader
    }

    pub(crate) fn available(&self) -> usize {
        self.end - self.start
    }

    pub(crate) fn bytes(&mut self) -> &mut [u8] {
        let (s, e) = (self.start, self.end);
        &mut self.store.as_mut()[s..e]
    }

    /// Drops the heap buffer once drained after a short read, so an idle connection holds
    /// only the inline array.
    pub(crate) fn relax(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !self.busy && matches!(self.store, Store::Heap(_)) {
                self.store = Store::Inline([0; INLINE]);
            }
        }
    }

    /// Reads and drops everything until the peer's end of stream or an error: a lingering
    /// close, so that closing our side does not reset the connection while the peer still
    /// sends (a reset destroys what the peer has not yet read of ours).
    pub(crate) async fn discard(&mut self) {
        self.start = self.end;
        self.relax();
        // Allocated only when lingering: an idle relay's state stays small.
        let mut sink = vec![0u8; 4096];
        while matches!(self.src.read(&mut sink).await, Ok(n) if n > 0) {}
    }

    /// Makes sure at least `need` bytes are buffered. `Ok(false)` on a clean EOF before any
    /// byte of the awaited unit arrived.
    pub(crate) async fn fill(&mut self, need: usize) -> Result<bool, FillError> {
        while self.available() < need {
            let cap = self.store.as_mut().len();
            if cap - self.start < need {
                // Move the partial unit to the front to make room.
                let (s, e) = (self.start, self.end);
                self.store.as_mut().copy_within(s..e, 0);
                self.start = 0;
                self.end = e - s;
            }
            // Streaming payload, or a header that spans reads: take the big buffer.
            if self.end == cap || (self.busy && matches!(self.store, Store::Inline(_))) {
                let mut heap = vec![0; self.heap_size].into_boxed_slice();
                heap[..self.available()].copy_from_slice(self.bytes());
                self.end -= self.start;
                self.start = 0;
                self.store = Store::Heap(heap);
            }
            let end = self.end;
            let space = &mut self.store.as_mut()[end..];
            let offered = space.len();
            let n = self.src.read(space).await?;
            if n == 0 {
                return if self.available() == 0 {
                    Ok(false)
                } else {
                    Err(FillError::Eof)
                };
            }
            self.busy = n == offered;
            self.end += n;
        }
        Ok(true)
    }
}

/// Decodes a client's frame header from `b` (it must be masked); `Ok(None)` if more bytes
/// are needed, else the header, its mask key and its size on the wire.
pub(crate) fn client_header(b: &[u8]) -> Result<Option<(FrameHeader, [u8; 4], usize)>, FrameError> {
    Ok(FrameHeader::decode(b, Role::Server)?
        .map(|(header, size)| (header, header.mask.unwrap_or_default(), size)))
}

/// Unmasks a piece of payload that starts `offset` bytes into its frame.
pub(crate) fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    apply_mask(rotate_mask(mask, offset), data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{MAX_HEADER, Opcode};

    #[test]
    fn unmask_honours_offset() {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let plain: Vec<u8> = (0..37u8).collect();
        let masked: Vec<u8> = plain
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        for split in 0..plain.len() {
            let mut m = masked.clone();
            let (x, y) = m.split_at_mut(split);
            unmask(x, mask, 0);
            unmask(y, mask, split as u64);
            assert_eq!(m, plain, "split at {split}");
        }
    }

    #[test]
    fn header_table() {
        // (bytes, expected: Ok(Some((header, mask, size))) / Ok(None) / Err)
        assert!(client_header(&[0x81]).unwrap().is_none());
        assert!(client_header(&[0x81, 0x85, 1, 2, 3]).unwrap().is_none());
        let (h, mask, size) = client_header(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.fin, h.opcode, h.len, size),
            (true, Opcode::Binary, 256, 8)
        );
        assert_eq!(mask, [1, 2, 3, 4]);
        let (h, _, size) = client_header(&[0x02, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4])
            .unwrap()
            .unwrap();
        assert_eq!((h.fin, h.len, size), (false, 1 << 32, 14));
        assert!(client_header(&[0x02, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]).is_err());
        assert!(
            client_header(&[0xC1, 0x80, 1, 2, 3, 4]).is_err(),
            "rsv1 without extension"
        );
        assert!(
            client_header(&[0x83, 0x80, 1, 2, 3, 4]).is_err(),
            "reserved opcode"
        );
        assert!(
            client_header(&[0x09, 0x80, 1, 2, 3, 4]).is_err(),
            "fragmented ping"
        );
        assert!(
            client_header(&[0x89, 0xFE, 0, 126, 1, 2, 3, 4]).is_err(),
            "ping over 125"
        );
        assert_eq!(
            client_header(&[0x82, 0x00]).unwrap_err(),
            FrameError::UnmaskedFrame
        );
        // The relay's own (server) headers, written in place.
        let mut out = [0u8; MAX_HEADER];
        let header = |fin, opcode, len| FrameHeader {
            fin,
            opcode,
            mask: None,
            len,
        };
        assert_eq!(header(true, Opcode::Text, 5).write(&mut out), 2);
        assert_eq!(&out[..2], &[0x81, 5]);
        assert_eq!(header(false, Opcode::Binary, 70_000).write(&mut out), 10);
        assert_eq!(&out[..2], &[0x02, 127]);
    }
}
