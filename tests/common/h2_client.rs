//! An HTTP/2 client (the `h2` crate, no pool, no retries) over a TLS
//! connection to the gateway's TLS listener.

use bytes::Bytes;

/// An h2 connection to the TLS listener (ALPN `h2` only).
pub async fn h2_connect(port: u16) -> h2::client::SendRequest<Bytes> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls()).expect("TLS builder");
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x02h2").expect("ALPN");
    let ssl = b
        .build()
        .configure()
        .expect("TLS config")
        .into_ssl("localhost")
        .expect("TLS session");
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let mut tls = tokio_openssl::SslStream::new(ssl, tcp).expect("TLS stream");
    std::pin::Pin::new(&mut tls)
        .connect()
        .await
        .expect("TLS handshake");
    assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}
