//! rustls configurations: the gateway's server side (from PEM files, or a generated
//! development CA), and the client side used by the SDK and the tests.
//!
//! Only the `ring` provider is compiled in, and it is passed explicitly, so no process-wide
//! default has to be installed.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocol id for HTTP/1.1; WebSocket upgrades need it.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN protocol id for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN protocol id for HTTP/1.0: a client that offers only it (`curl --http1.0`) is
/// refused the handshake by a server that does not list it.
pub const ALPN_HTTP10: &[u8] = b"http/1.0";

/// A TLS set-up that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no certificate or no private key.
    #[error("{0} holds no usable PEM {1}")]
    NoPem(String, &'static str),
    /// rustls refused the certificate, key or settings.
    #[error("rustls refused the configuration")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and its private key, ready for [`server_config`].
#[derive(Debug)]
pub struct Identity {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's key.
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    ///
    /// # Errors
    /// Unreadable files, or files with no certificate / key.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| TlsError::NoPem(cert.display().to_string(), "certificate"))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| TlsError::NoPem(key.display().to_string(), "private key"))?;
        Ok(Self { chain, key })
    }
}

/// A throwaway certificate authority and a server certificate it signed, for development and
/// tests. Clients trust [`DevPki::ca_pem`] (e.g. via `NODE_EXTRA_CA_CERTS`).
pub struct DevPki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The CA certificate, DER.
    pub ca_der: CertificateDer<'static>,
    /// The server identity (leaf signed by the CA).
    pub identity: Identity,
    /// The leaf certificate, PEM (to write the identity to files).
    pub leaf_pem: String,
    /// The leaf's private key, PEM. A secret.
    pub key_pem: String,
}

// The leaf's key is a secret, even a development one: never printed.
impl std::fmt::Debug for DevPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevPki")
            .field("ca_pem", &self.ca_pem)
            .field("leaf_pem", &self.leaf_pem)
            .finish_non_exhaustive()
    }
}

impl DevPki {
    /// Makes a CA and a leaf valid for `names` (DNS names or IP addresses; `localhost`,
    /// `127.0.0.1` and `::1` are always included).
    ///
    /// # Errors
    /// Only if key generation fails.
    pub fn generate(names: &[String]) -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Ferry development CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut all: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        all.extend(
            names
                .iter()
                .filter(|n| !all.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let leaf_key = KeyPair::generate()?;
        let mut leaf = CertificateParams::default();
        leaf.distinguished_name
            .push(DnType::CommonName, all[0].clone());
        leaf.subject_alt_names = all
            .iter()
            .map(|n| match n.parse() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => n.clone().try_into().map(SanType::DnsName),
            })
            .collect::<Result<_, _>>()?;
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            identity: Identity {
                chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
                key: PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            },
            leaf_pem: leaf_cert.pem(),
            key_pem: leaf_key.serialize_pem(),
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration offering `alpn` (in preference order).
///
/// # Errors
/// rustls refuses the key or chain.
pub fn server_config(identity: Identity, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The server's certificate, replaceable while it serves: each handshake takes the one in
/// force when it starts, so replacing it leaves open connections as they are.
#[derive(Debug)]
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// A certificate from `identity`.
    ///
    /// # Errors
    /// rustls refuses the key, or the key does not match the certificate.
    pub fn new(identity: Identity) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(certified(identity)?)),
        }))
    }

    /// Puts `identity` in force for the handshakes that start from now on.
    ///
    /// # Errors
    /// As [`ServerCert::new`]; the certificate in force stays.
    pub fn replace(&self, identity: Identity) -> Result<(), TlsError> {
        let next = Arc::new(certified(identity)?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn certified(identity: Identity) -> Result<CertifiedKey, TlsError> {
    if identity.chain.is_empty() {
        return Err(TlsError::NoPem(
            "the certificate chain".into(),
            "CERTIFICATE",
        ));
    }
    Ok(CertifiedKey::from_der(
        identity.chain,
        identity.key,
        &provider(),
    )?)
}

/// A server configuration serving `cert` (replaceable) and offering `alpn`.
///
/// # Errors
/// rustls refuses the settings (it does not with the built-in provider).
pub fn server_config_with(
    cert: Arc<ServerCert>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration trusting `roots`, offering `alpn`.
///
/// # Errors
/// rustls refuses the settings (it does not with the built-in provider).
pub fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Root store with the certificates of a PEM bundle (e.g. the development CA).
///
/// # Errors
/// The bundle holds no certificate rustls accepts as a root.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem).flatten() {
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoPem("CA bundle".into(), "certificate"));
    }
    Ok(roots)
}

/// Root store with the operating system's trusted roots (for Azure Relay or a gateway with a
/// public certificate). Certificates the store cannot parse are skipped.
pub fn native_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_builds_configs_that_trust_each_other() {
        let pki = DevPki::generate(&["relay.test".into()]).unwrap();
        assert!(pki.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let roots = roots_from_pem(pki.ca_pem.as_bytes()).unwrap();
        assert_eq!(roots.len(), 1);
        server_config(pki.identity, &[ALPN_HTTP11]).unwrap();
        client_config(roots, &[ALPN_HTTP11]).unwrap();
    }

    #[test]
    fn empty_bundle_is_an_error() {
        assert!(matches!(
            roots_from_pem(b"nothing"),
            Err(TlsError::NoPem(..))
        ));
    }
}
