//! The gRPC front end's relayed HTTP/2 connections: one per listener, opened on first use
//! and shared by every call sent to that listener.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;

use super::body::Checked;

/// The forwarded request body: the caller's, with each message's length checked.
pub(super) type UpBody = Checked<Incoming>;

/// The relayed HTTP/2 connections, one per listener control connection.
#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<HashMap<u64, Arc<Slot>>>,
    pub(super) generation: AtomicU64,
}

/// One listener's connection: the ready handle, and a lock held while (re)connecting so a
/// burst of calls opens one connection, not one each.
#[derive(Default)]
pub(super) struct Slot {
    pub(super) ready: Mutex<Option<(u64, SendRequest<UpBody>)>>,
    pub(super) connecting: Arc<tokio::sync::Mutex<()>>,
}

impl Pool {
    pub(super) fn slot(&self, conn_id: u64) -> Arc<Slot> {
        lock(&self.slots).entry(conn_id).or_default().clone()
    }

    /// Forgets connection `generation` of a listener once it ended.
    pub(super) fn ended(&self, conn_id: u64, generation: u64) {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get(&conn_id) {
            let mut ready = lock(&slot.ready);
            if ready.as_ref().is_some_and(|(g, _)| *g == generation) {
                *ready = None;
            }
            let idle = ready.is_none();
            drop(ready);
            if idle && Arc::strong_count(slot) == 1 {
                slots.remove(&conn_id);
            }
        }
    }

    /// Lets a listener's connection go once its control channel is gone.
    pub(super) fn forget(&self, conn_id: u64) {
        let slot = lock(&self.slots).remove(&conn_id);
        if let Some(slot) = slot {
            lock(&slot.ready).take();
        }
    }

    /// Relayed connections open now.
    pub(crate) fn open_count(&self) -> usize {
        lock(&self.slots)
            .values()
            .filter(|s| lock(&s.ready).is_some())
            .count()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a map or option operation: a panic cannot leave it torn.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
