//! The TLS client listener (`server.tls: {listen, cert, key}`), HTTP/2 by
//! ALPN. The certificate is handed to each handshake from memory, so
//! SIGHUP re-reads the files and new connections get the new certificate
//! without a restart (connections already open keep theirs). A binary
//! upgrade (`-u`) reads them at start like any start.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::listeners::TlsAccept;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::ssl::{select_next_proto, AlpnError, SslAcceptor, SslMethod, SslRef};

use crate::config::CertPair;

/// The listener's live certificate, swapped on reload.
pub struct LiveCert {
    cert_path: String,
    key_path: String,
    current: ArcSwap<CertPair>,
}

impl LiveCert {
    /// Reads the files once.
    pub fn open(cert: &str, key: &str) -> Result<Arc<LiveCert>, String> {
        let pair = CertPair::load(cert, key)?;
        Ok(Arc::new(LiveCert {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: ArcSwap::from_pointee(pair),
        }))
    }

    /// Reads the files again; on a problem the running certificate stays.
    pub fn reload(&self) -> Result<(), String> {
        let pair = CertPair::load(&self.cert_path, &self.key_path)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }

    /// The listener's handshake: Mozilla intermediate, h2 preferred over
    /// HTTP/1.1, this certificate per handshake.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, String> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        b.set_alpn_select_callback(prefer_h2);
        Ok(TlsAcceptor {
            acceptor: b.build(),
            callbacks: Handshake(self.clone()),
        })
    }
}

/// ALPN: h2 when the client offers it, else HTTP/1.1; a client offering
/// neither gets no ALPN answer (and is served HTTP/1.1).
fn prefer_h2<'a>(_ssl: &mut SslRef, offered: &'a [u8]) -> Result<&'a [u8], AlpnError> {
    if offered.is_empty() {
        return Err(AlpnError::NOACK);
    }
    select_next_proto(b"\x02h2\x08http/1.1", offered).ok_or(AlpnError::NOACK)
}

/// The TLS handshake of the listener. The connection layer runs it after a
/// connection took its slot and within the header deadline counted from the
/// accept (`listener.rs`); Pingora's own listener would run it before any
/// slot, for a fixed 60 s, so the listener's addresses are given to
/// Pingora as plain TCP.
pub struct TlsAcceptor {
    acceptor: SslAcceptor,
    callbacks: Handshake,
}

impl TlsAcceptor {
    /// The handshake on an accepted TCP connection: the TLS stream, or why
    /// it failed.
    pub async fn accept(&self, stream: Stream) -> pingora::Result<Stream> {
        let tcp = stream
            .into_any()
            .downcast::<pingora::protocols::l4::stream::Stream>()
            .map_err(|_| {
                pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "the TLS listener got a connection that is not TCP",
                )
            })?;
        let tls = pingora::protocols::tls::server::handshake_with_callback(
            &self.acceptor,
            *tcp,
            &self.callbacks,
        )
        .await?;
        Ok(Box::new(tls))
    }
}

struct Handshake(Arc<LiveCert>);

#[async_trait]
impl TlsAccept for Handshake {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let pair = self.0.current.load();
        let Some((leaf, rest)) = pair.chain.split_first() else {
            return;
        };
        // A failure leaves the handshake without a certificate: the client
        // sees a handshake error, and the log says why.
        let result = pingora::tls::ext::ssl_use_certificate(ssl, leaf)
            .and_then(|()| {
                rest.iter()
                    .try_for_each(|c| pingora::tls::ext::ssl_add_chain_cert(ssl, c))
            })
            .and_then(|()| pingora::tls::ext::ssl_use_private_key(ssl, &pair.key));
        if let Err(e) = result {
            log::error!("tls listener: cannot use the certificate: {e}");
        }
    }
}

/// Re-reads the listener's certificate on SIGHUP.
pub struct CertReloader(pub Arc<LiveCert>);

#[async_trait]
impl BackgroundService for CertReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot listen for SIGHUP, certificate reload disabled: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => match self.0.reload() {
                    Ok(()) => log::info!("tls certificate reloaded from {}", self.0.cert_path),
                    Err(e) => log::error!("tls certificate reload rejected, the running one stays: {e}"),
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The TLS listener's handshake and the service that re-reads its
/// certificate on SIGHUP. Its addresses are given to Pingora as plain TCP:
/// the connection layer runs the handshake ([`TlsAcceptor`]).
pub fn open(t: &crate::config::TlsListener) -> Result<(TlsAcceptor, CertReloader), String> {
    let live = LiveCert::open(&t.cert, &t.key)?;
    let acceptor = live.acceptor()?;
    Ok((acceptor, CertReloader(live)))
}

/// The h2 settings of the TLS listener: at most `max_streams` concurrent
/// streams per connection (more get `REFUSED_STREAM`) and a header list no
/// larger than the HTTP/1 head cap. The h2 crate's own defaults already
/// bound reset floods (pending and locally caused resets).
pub fn h2_limits(
    max_header_bytes: usize,
    max_streams: u32,
) -> pingora::protocols::http::v2::server::H2Options {
    let mut b = pingora::protocols::http::v2::server::H2Options::new();
    b.max_concurrent_streams(max_streams)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    b
}
