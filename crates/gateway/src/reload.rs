//! A new configuration while serving: rules, paths, limits, timeouts and the certificate
//! change at once; whatever else differs is reported as waiting for a restart.

use std::sync::Arc;

use ferry_net::tls::{Identity, ServerCert, TlsError};

use crate::catalog::Catalog;
use crate::config::{Config, TlsSetup};

/// What a reload did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Reloaded {
    /// Whether a certificate was read again and put in force.
    pub certificate: bool,
    /// Settings that differ from those in force and take effect at the next start.
    pub needs_restart: Vec<&'static str>,
}

/// A reload was refused; the configuration in force stays whole.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReloadError {
    /// The certificate or key files could not be read or do not match.
    #[error("the certificate")]
    Tls(#[from] TlsError),
}

/// Applies `next` over `current` (the configuration last put in force).
pub(crate) async fn reload(
    current: &Config,
    next: &Config,
    catalog: &Arc<Catalog>,
    cert: Option<&ServerCert>,
) -> Result<Reloaded, ReloadError> {
    let mut done = Reloaded::default();
    // The only step that can fail goes first, so a refusal changes nothing.
    match (&next.tls, cert) {
        (TlsSetup::Files { cert: c, key }, Some(server)) => {
            let (c, key) = (c.clone(), key.clone());
            let identity = tokio::task::spawn_blocking(move || Identity::from_pem_files(&c, &key))
                .await
                .map_err(|_| TlsError::NoPem("the certificate files".into(), "CERTIFICATE"))??;
            server.replace(identity)?;
            done.certificate = true;
        }
        (TlsSetup::Dev { .. }, _) | (_, None) => {}
    }
    let seeded = next.clone();
    let catalog = catalog.clone();
    // The catalog waits for a management call writing to its store, off the async threads.
    let _ = tokio::task::spawn_blocking(move || catalog.reseed(&seeded)).await;
    done.needs_restart = differences(current, next);
    Ok(done)
}

/// The settings that differ and wait for a restart.
fn differences(a: &Config, b: &Config) -> Vec<&'static str> {
    let same =
        |x: &dyn std::fmt::Debug, y: &dyn std::fmt::Debug| format!("{x:?}") == format!("{y:?}");
    let mut differ = Vec::new();
    let mut check = |name: &'static str, equal: bool| {
        if !equal {
            differ.push(name);
        }
    };
    check("namespace", a.namespace == b.namespace);
    check("aliases", a.aliases == b.aliases);
    check(
        "listen",
        (
            a.plain_addr,
            a.tls_addr,
            a.nettcp_addr,
            a.relayed_addr,
            a.plain_public,
            a.insecure,
        ) == (
            b.plain_addr,
            b.tls_addr,
            b.nettcp_addr,
            b.relayed_addr,
            b.plain_public,
            b.insecure,
        ),
    );
    check(
        "tls",
        matches!(
            (&a.tls, &b.tls),
            (TlsSetup::Dev { .. }, TlsSetup::Dev { .. })
                | (TlsSetup::Files { .. }, TlsSetup::Files { .. })
        ),
    );
    check("dynamic_paths", a.dynamic_paths == b.dynamic_paths);
    check("grpc", a.grpc_routes == b.grpc_routes);
    // Limits and timeouts are put in force by the caller, for what begins from then on,
    // except these, which the pairing core and the catalog take once.
    check(
        "limits.control_queue",
        a.limits.control_queue == b.limits.control_queue,
    );
    check(
        "timeouts.rendezvous",
        a.timeouts.rendezvous == b.timeouts.rendezvous,
    );
    check("timeouts.request", a.timeouts.request == b.timeouts.request);
    check(
        "timeouts.token_grace",
        a.timeouts.token_grace == b.timeouts.token_grace,
    );
    check("network.trusted_proxies", a.proxies == b.proxies);
    check("cluster", same(&a.cluster, &b.cluster));
    check("admin", same(&a.admin, &b.admin));
    check("data_dir", a.data_dir == b.data_dir);
    // Network rules are the catalog's, and reload with it.
    differ
}
