//! The certificate of the TLS listener (`server.tls.cert`, `server.tls.key`):
//! read and checked here, so `-t` finds a bad pair; the listener
//! (`crate::tls`) hands the loaded pair to each handshake.

use pingora::tls::pkey::{PKey, Private};
use pingora::tls::x509::X509;

/// A certificate chain and its private key, read from PEM files.
pub struct CertPair {
    /// The leaf first, then intermediates.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

impl CertPair {
    /// Reads `cert` (the leaf first, then intermediates) and `key`, and
    /// checks that they belong together.
    pub fn load(cert: &str, key: &str) -> Result<CertPair, String> {
        let pem = std::fs::read(cert).map_err(|e| format!("cannot read {cert}: {e}"))?;
        let chain = X509::stack_from_pem(&pem)
            .map_err(|e| format!("{cert}: not a PEM certificate: {e}"))?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{cert}: no certificate in it"))?;
        let pem = std::fs::read(key).map_err(|e| format!("cannot read {key}: {e}"))?;
        let key_pem = PKey::private_key_from_pem(&pem)
            .map_err(|_| format!("{key}: not a PEM private key"))?;
        let public = leaf
            .public_key()
            .map_err(|e| format!("{cert}: unreadable public key: {e}"))?;
        if !public.public_eq(&key_pem) {
            return Err(format!("{key} is not the private key of {cert}"));
        }
        Ok(CertPair {
            chain,
            key: key_pem,
        })
    }
}
