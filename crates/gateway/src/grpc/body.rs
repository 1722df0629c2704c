//! What a relayed gRPC call carries: its status codes and the failures the gateway ends a
//! call with, and the bodies that check each message's length both ways.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use ferry_hc::auth::AuthError;
use http::{HeaderMap, HeaderValue};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::Sleep;

/// gRPC status codes (the subset the gateway itself produces), as `grpc-status` carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    Cancelled = 1,
    DeadlineExceeded = 4,
    NotFound = 5,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Internal = 13,
    Unimplemented = 12,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    /// The HTTP status the code stands for (gRPC's own mapping, read backwards), for the
    /// metrics and events that count calls with HTTP requests.
    pub(crate) fn http_status(self) -> u16 {
        match self {
            Self::Unauthenticated => 401,
            Self::PermissionDenied => 403,
            Self::NotFound | Self::Unimplemented => 404,
            Self::ResourceExhausted => 429,
            Self::Cancelled => 499,
            Self::Unavailable => 503,
            Self::DeadlineExceeded => 504,
            Self::Internal => 500,
        }
    }
}

/// A call the gateway ends itself.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(super) code: Code,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The trailers (or, for a trailers-only response, the headers) that carry it.
    pub(super) fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("grpc-status", HeaderValue::from(self.code as u16));
        if let Ok(v) = HeaderValue::from_str(&percent_encode_message(&self.message)) {
            map.insert("grpc-message", v);
        }
        map
    }
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        let code = if e.status() == 403 {
            Code::PermissionDenied
        } else {
            Code::Unauthenticated
        };
        Self::new(code, e.to_string())
    }
}

/// `grpc-message` encoding: printable ASCII except `%` as is, everything else `%XX`.
fn percent_encode_message(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7E).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Follows the 5-byte length prefixes of gRPC messages through a byte stream.
#[derive(Default)]
pub(super) struct Scanner {
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current message still to come.
    remaining: u64,
}

impl Scanner {
    /// Consumes `data`; `Err(len)` names the first message longer than `limit`.
    fn feed(&mut self, mut data: &[u8], limit: u64) -> Result<(), u64> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = data
                    .len()
                    .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = data.len().min(5 - self.have);
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u64::from(u32::from_be_bytes([a, b, c, d]));
                if len > limit {
                    return Err(len);
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

/// A body whose gRPC messages are checked against the size limit; an oversized one ends
/// the call with RESOURCE_EXHAUSTED (recorded in `abort`, so the reply can say so).
pub(crate) struct Checked<B> {
    pub(super) inner: B,
    pub(super) scan: Scanner,
    pub(super) limit: u64,
    pub(super) abort: Arc<OnceLock<Failure>>,
    pub(super) side: &'static str,
}

/// Why a checked body stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// A message over the limit.
    #[error("grpc {side} message of {len} bytes is over the {limit}-byte limit")]
    TooBig {
        side: &'static str,
        len: u64,
        limit: u64,
    },
    /// The stream failed underneath.
    #[error(transparent)]
    Transport(#[from] hyper::Error),
}

impl<B> hyper::body::Body for Checked<B>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Unpin,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Err(len) = this.scan.feed(data, this.limit)
        {
            let e = BodyError::TooBig {
                side: this.side,
                len,
                limit: this.limit,
            };
            let _ = this
                .abort
                .set(Failure::new(Code::ResourceExhausted, e.to_string()));
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The caller's view of the listener's reply: passed through, except that a failure or the
/// deadline ends it with trailers carrying the right status rather than a reset.
pub(super) struct Reply {
    pub(super) inner: Checked<Incoming>,
    pub(super) deadline: Option<Pin<Box<Sleep>>>,
    pub(super) finished: bool,
}

impl Reply {
    fn finish(&mut self, failure: &Failure) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.finished = true;
        Poll::Ready(Some(Ok(Frame::trailers(failure.headers()))))
    }
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return this.finish(&Failure::new(Code::DeadlineExceeded, "deadline exceeded"));
        }
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if frame.is_trailers() {
                    this.finished = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let failure = this.inner.abort.get().cloned().unwrap_or_else(|| {
                    let why = match &e {
                        BodyError::Transport(t) if t.is_canceled() => Code::Cancelled,
                        _ => Code::Unavailable,
                    };
                    Failure::new(why, format!("listener connection lost: {e}"))
                });
                this.finish(&failure)
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        // A trailers-only answer (HEADERS with END_STREAM, how errors usually come) must
        // leave as one too: a client may not accept an empty DATA frame ending it instead.
        self.finished || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanner_follows_prefixes_split_anywhere() {
        let mut stream = Vec::new();
        for len in [0u32, 3, 70_000, 5] {
            stream.push(0);
            stream.extend_from_slice(&len.to_be_bytes());
            stream.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for piece in [1usize, 2, 5, 7, 4096, stream.len()] {
            let mut s = Scanner::default();
            for chunk in stream.chunks(piece) {
                s.feed(chunk, 70_000).unwrap();
            }
            assert_eq!((s.have, s.remaining), (0, 0));
            let mut s = Scanner::default();
            let err = stream.chunks(piece).try_for_each(|c| s.feed(c, 69_999));
            assert_eq!(err, Err(70_000));
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode_message("no listener"), "no listener");
        assert_eq!(percent_encode_message("50% é\n"), "50%25 %C3%A9%0A");
    }
}
