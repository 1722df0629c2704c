//! Fair admission: who may open a connection, and how many.
//!
//! ```text
//!  accept ─► source refused?  (too many of its connections open, opening too fast,
//!            │                 or failing authentication too often) ─► dropped at once
//!            ▼
//!          handshake slot  (TLS, request head: bounded in number and in time)
//!            │
//!            ├─ listener (control channel, rendezvous) ─► listener slot, or 503
//!            └─ sender (WebSocket, HTTP, gRPC, net.tcp) ─► sender slot, or 503 / close
//! ```
//!
//! Listeners and senders draw on separate budgets, so no number of senders can lock the
//! listeners out. Sources are keyed by address (IPv6 by its /64, the smallest block a
//! network is given), and every per-source table holds only sources seen lately.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::Limits;

/// Keyed rate limiters and the blocked table are trimmed to sources seen lately once they
/// hold this many.
const TRIM_AT: usize = 65_536;

/// Why a connection was turned away at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The source already has `max_connections_per_source` open.
    #[error("too many connections from this source")]
    TooManyConnections,
    /// The source opens connections faster than `handshakes_per_source_per_second`.
    #[error("connections opened too fast from this source")]
    TooFast,
    /// The source failed authentication too often and is blocked for a while.
    #[error("too many failed authentications from this source")]
    AuthBlocked,
}

/// What a connection turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A listener's control channel or rendezvous.
    Listener,
    /// Anything a sender opens.
    Sender,
}

/// The role's budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the gateway has no room for another {0:?} connection")]
pub(crate) struct Busy(pub(crate) Role);

/// The gateway's admission state.
pub(crate) struct Admission {
    handshakes: Arc<Semaphore>,
    listeners: Arc<Semaphore>,
    senders: Arc<Semaphore>,
    /// The three budgets' sizes as configured, for a reload to resize them by the difference.
    sizes: Mutex<[usize; 3]>,
    /// `max_connections_per_source`; 0: no cap.
    per_source_max: AtomicU32,
    open: Mutex<HashMap<IpAddr, u32>>,
    rates: RwLock<Arc<Rates>>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

/// The per-source rates, replaced whole by a reload.
struct Rates {
    opening: Option<DefaultKeyedRateLimiter<IpAddr>>,
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// How long a source that spent its failure allowance stays blocked.
    block_for: Duration,
    /// The settings they were made from.
    made_of: (u32, u32),
}

impl Rates {
    fn of(limits: &Limits) -> Self {
        let opening = NonZeroU32::new(limits.handshakes_per_source_per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(4).expect("non-zero constant"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        let failures = NonZeroU32::new(limits.auth_failures_per_source_per_minute)
            .map(|rate| RateLimiter::keyed(Quota::per_minute(rate)));
        let block_for = Duration::from_secs(60) / limits.auth_failures_per_source_per_minute.max(1);
        Self {
            opening,
            failures,
            block_for,
            made_of: (
                limits.handshakes_per_source_per_second,
                limits.auth_failures_per_source_per_minute,
            ),
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: &Limits) -> Arc<Self> {
        let sizes = [
            limits.max_handshakes.get(),
            limits.max_listener_connections.get(),
            limits.max_sender_connections.get(),
        ];
        Arc::new(Self {
            handshakes: Arc::new(Semaphore::new(sizes[0])),
            listeners: Arc::new(Semaphore::new(sizes[1])),
            senders: Arc::new(Semaphore::new(sizes[2])),
            sizes: Mutex::new(sizes),
            per_source_max: AtomicU32::new(limits.max_connections_per_source),
            open: Mutex::new(HashMap::new()),
            rates: RwLock::new(Arc::new(Rates::of(limits))),
            blocked: Mutex::new(HashMap::new()),
        })
    }

    /// Puts new limits in force. A budget that grows takes more connections at once; one that
    /// shrinks takes no new connection until enough of those it holds have ended (the
    /// difference is taken back from them as they go, by a task of `tracker`'s). Per-source
    /// rates start afresh when they change.
    pub(crate) fn retune(
        &self,
        limits: &Limits,
        tracker: &tokio_util::task::TaskTracker,
        cancel: &tokio_util::sync::CancellationToken,
    ) {
        let next = [
            limits.max_handshakes.get(),
            limits.max_listener_connections.get(),
            limits.max_sender_connections.get(),
        ];
        let mut sizes = self.sizes.lock().unwrap_or_else(PoisonError::into_inner);
        let budgets = [&self.handshakes, &self.listeners, &self.senders];
        for ((budget, size), want) in budgets.into_iter().zip(sizes.iter_mut()).zip(next) {
            if want > *size {
                budget.add_permits(want - *size);
            } else if want < *size {
                let owed = *size - want;
                let debt = owed - budget.forget_permits(owed);
                if debt > 0 {
                    let (budget, cancel) = (budget.clone(), cancel.clone());
                    tracker.spawn(async move {
                        let debt = u32::try_from(debt).unwrap_or(u32::MAX);
                        tokio::select! {
                            Ok(taken) = budget.acquire_many_owned(debt) => taken.forget(),
                            () = cancel.cancelled() => {}
                        }
                    });
                }
            }
            *size = want;
        }
        drop(sizes);
        self.per_source_max
            .store(limits.max_connections_per_source, Ordering::Relaxed);
        let made_of = (
            limits.handshakes_per_source_per_second,
            limits.auth_failures_per_source_per_minute,
        );
        let mut rates = self.rates.write().unwrap_or_else(PoisonError::into_inner);
        if rates.made_of != made_of {
            *rates = Arc::new(Rates::of(limits));
        }
    }

    fn rates(&self) -> Arc<Rates> {
        self.rates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits for a handshake slot: accepting pauses while `max_handshakes` connections are
    /// still in their handshake (each bounded by the handshake timeout).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn handshake_slot(&self) -> OwnedSemaphorePermit {
        self.handshakes
            .clone()
            .acquire_owned()
            .await
            .expect("the handshake semaphore is never closed")
    }

    /// Admits a connection just accepted from `ip`, holding `handshake` (from
    /// [`Admission::handshake_slot`]), or says why not.
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        handshake: OwnedSemaphorePermit,
    ) -> Result<Slot, Refusal> {
        let source = source_key(ip);
        if self.is_blocked(source) {
            return Err(Refusal::AuthBlocked);
        }
        if let Some(limiter) = &self.rates().opening {
            if limiter.len() >= TRIM_AT {
                limiter.retain_recent();
            }
            if limiter.check_key(&source).is_err() {
                return Err(Refusal::TooFast);
            }
        }
        {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let count = open.entry(source).or_insert(0);
            let max = self.per_source_max.load(Ordering::Relaxed);
            if max > 0 && *count >= max {
                if *count == 0 {
                    open.remove(&source);
                }
                return Err(Refusal::TooManyConnections);
            }
            *count += 1;
        }
        Ok(Slot {
            admission: self.clone(),
            source: Some(source),
            permit: handshake,
            role: None,
        })
    }

    /// Admits a connection from a trusted load balancer whose requests name their clients
    /// (`X-Forwarded-For`): it carries many clients, so it is held to the gateway's budgets
    /// but not to one source's.
    pub(crate) fn admit_proxy(self: &Arc<Self>, handshake: OwnedSemaphorePermit) -> Slot {
        Slot {
            admission: self.clone(),
            source: None,
            permit: handshake,
            role: None,
        }
    }

    /// Counts a failed authentication from `ip`; past the allowance the source is blocked
    /// (its new connections dropped at accept, its requests on open ones refused) until the
    /// allowance refills.
    pub(crate) fn auth_failed(&self, ip: IpAddr) {
        let rates = self.rates();
        let Some(limiter) = &rates.failures else {
            return;
        };
        let source = source_key(ip);
        if limiter.len() >= TRIM_AT {
            limiter.retain_recent();
        }
        if limiter.check_key(&source).is_err() {
            let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if blocked.len() >= TRIM_AT {
                blocked.retain(|_, until| *until > now);
            }
            if blocked.len() < TRIM_AT {
                blocked.insert(source, now + rates.block_for);
            }
        }
    }

    /// Whether `ip` is blocked for failing authentication too often.
    pub(crate) fn blocked(&self, ip: IpAddr) -> bool {
        self.is_blocked(source_key(ip))
    }

    fn is_blocked(&self, source: IpAddr) -> bool {
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(&source) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                blocked.remove(&source);
                false
            }
            None => false,
        }
    }

    fn release(&self, source: IpAddr) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                open.remove(&source);
            }
        }
    }
}

/// One admitted connection's place: its source's count and a handshake slot, then a
/// listener or sender slot. Dropping it gives both back.
pub(crate) struct Slot {
    admission: Arc<Admission>,
    /// The source it counts against; `None` for a trusted load balancer.
    source: Option<IpAddr>,
    permit: OwnedSemaphorePermit,
    role: Option<Role>,
}

impl Slot {
    /// Moves the connection from the handshake budget to its role's. A connection that has
    /// its role already keeps it.
    ///
    /// # Errors
    /// The role's budget is spent; the connection should be refused (503).
    pub(crate) fn assign(&mut self, role: Role) -> Result<(), Busy> {
        if self.role.is_some() {
            return Ok(());
        }
        let budget = match role {
            Role::Listener => &self.admission.listeners,
            Role::Sender => &self.admission.senders,
        };
        self.permit = budget.clone().try_acquire_owned().map_err(|_| Busy(role))?;
        self.role = Some(role);
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(source) = self.source {
            self.admission.release(source);
        }
    }
}

/// The key a source is counted under: an IPv4 address (also when mapped into IPv6), or an
/// IPv6 address's /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_handshakes: NonZeroUsize::new(8).unwrap(),
            max_listener_connections: NonZeroUsize::new(2).unwrap(),
            max_sender_connections: NonZeroUsize::new(2).unwrap(),
            max_connections_per_source: 3,
            handshakes_per_source_per_second: 1000,
            auth_failures_per_source_per_minute: 2,
            ..Limits::default()
        }
    }

    async fn admit(a: &Arc<Admission>, ip: &str) -> Result<Slot, Refusal> {
        let permit = a.handshake_slot().await;
        a.admit(ip.parse().unwrap(), permit)
    }

    #[tokio::test]
    async fn a_source_gets_its_share_and_no_more() {
        let a = Admission::new(&limits());
        let held: Vec<_> = futures_util::future::join_all((0..3).map(|_| admit(&a, "10.0.0.1")))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            admit(&a, "10.0.0.1").await.err(),
            Some(Refusal::TooManyConnections)
        );
        assert!(
            admit(&a, "10.0.0.2").await.is_ok(),
            "another source is not affected"
        );
        drop(held);
        assert!(
            admit(&a, "10.0.0.1").await.is_ok(),
            "closing gives the share back"
        );
        assert!(
            a.open.lock().unwrap().is_empty(),
            "no source is remembered once closed"
        );
    }

    #[tokio::test]
    async fn senders_cannot_take_the_listeners_slots() {
        let a = Admission::new(&limits());
        let mut senders = Vec::new();
        for i in 0..2 {
            let mut s = admit(&a, &format!("10.0.1.{i}")).await.unwrap();
            s.assign(Role::Sender).unwrap();
            senders.push(s);
        }
        let mut third = admit(&a, "10.0.1.9").await.unwrap();
        assert_eq!(third.assign(Role::Sender), Err(Busy(Role::Sender)));
        let mut listener = admit(&a, "10.0.1.9").await.unwrap();
        assert_eq!(listener.assign(Role::Listener), Ok(()));
        drop(senders);
        assert_eq!(third.assign(Role::Sender), Ok(()));
    }

    #[tokio::test]
    async fn a_reload_resizes_the_budgets_and_the_per_source_cap() {
        let a = Admission::new(&limits());
        let (tracker, cancel) = (
            tokio_util::task::TaskTracker::new(),
            tokio_util::sync::CancellationToken::new(),
        );
        let mut held = Vec::new();
        for ip in ["10.0.0.1", "10.0.0.2"] {
            let mut s = admit(&a, ip).await.unwrap();
            s.assign(Role::Sender).unwrap();
            held.push(s);
        }
        let mut third = admit(&a, "10.0.0.3").await.unwrap();
        assert_eq!(third.assign(Role::Sender), Err(Busy(Role::Sender)));
        // Grown: room at once.
        let grown = Limits {
            max_sender_connections: NonZeroUsize::new(3).unwrap(),
            max_connections_per_source: 1,
            ..limits()
        };
        a.retune(&grown, &tracker, &cancel);
        assert_eq!(third.assign(Role::Sender), Ok(()));
        assert_eq!(
            admit(&a, "10.0.0.1").await.err(),
            Some(Refusal::TooManyConnections),
            "the per-source cap went down to 1"
        );
        // Shrunk below what is held: nobody new until enough have left.
        let shrunk = Limits {
            max_sender_connections: NonZeroUsize::new(1).unwrap(),
            ..grown
        };
        a.retune(&shrunk, &tracker, &cancel);
        let mut fourth = admit(&a, "10.0.0.4").await.unwrap();
        drop(held);
        tokio::task::yield_now().await;
        assert_eq!(fourth.assign(Role::Sender), Err(Busy(Role::Sender)));
        drop(third);
        tokio::time::timeout(Duration::from_secs(5), async {
            while fourth.assign(Role::Sender).is_err() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("one sender fits once the others left");
        let mut fifth = admit(&a, "10.0.0.5").await.unwrap();
        assert_eq!(fifth.assign(Role::Sender), Err(Busy(Role::Sender)));
        cancel.cancel();
        tracker.close();
        tracker.wait().await;
    }

    #[tokio::test]
    async fn repeated_auth_failures_block_the_source_only() {
        let a = Admission::new(&limits());
        let ip: IpAddr = "10.0.2.1".parse().unwrap();
        a.auth_failed(ip);
        a.auth_failed(ip);
        assert!(!a.blocked(ip), "the allowance is two a minute");
        a.auth_failed(ip);
        assert!(a.blocked(ip));
        assert_eq!(
            admit(&a, "10.0.2.1").await.err(),
            Some(Refusal::AuthBlocked)
        );
        assert!(admit(&a, "10.0.2.2").await.is_ok());
    }

    #[tokio::test]
    async fn a_source_opening_too_fast_is_slowed() {
        let a = Admission::new(&Limits {
            handshakes_per_source_per_second: 2,
            max_connections_per_source: 0,
            ..limits()
        });
        let mut refused = 0;
        for _ in 0..20 {
            if matches!(admit(&a, "10.0.3.1").await, Err(Refusal::TooFast)) {
                refused += 1;
            }
        }
        // A burst of four times the rate passes; the rest of the twenty do not.
        assert_eq!(refused, 12);
        assert!(admit(&a, "10.0.3.2").await.is_ok());
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(source_key(mapped), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
