//! ai-proxy's `proxy-url`: a provider's connections through an outbound
//! proxy, an HTTP `CONNECT` proxy and a SOCKS5 one, each a real server on
//! loopback written here from its RFC (9110 §9.3.6; 1928 and 1929). The
//! providers are named `provider.invalid`, a name only the proxies resolve
//! (to loopback): an answer proves the request went through the tunnel.

use crate::common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The only name the proxies resolve, and only to loopback.
const NAME: &str = "provider.invalid";
const ADMIN: &str = "admin-key-of-the-proxy-tests-0123456789";

/// What a proxy was asked: each tunnel's target as `host:port`.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

impl Seen {
    fn targets(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Where a tunnel goes: `provider.invalid` and loopback addresses only (a
/// test never sends traffic anywhere else).
async fn dial(host: &str, port: u16) -> Option<TcpStream> {
    let ip = match host {
        NAME | "localhost" => "127.0.0.1",
        "127.0.0.1" => "127.0.0.1",
        _ => return None,
    };
    TcpStream::connect((ip, port)).await.ok()
}

/// An HTTP proxy that answers `CONNECT` (407 without the expected
/// `Proxy-Authorization`, when it expects one) and relays the tunnel.
async fn connect_proxy(basic: Option<&'static str>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 || head.len() > 8192 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let mut lines = head.split("\r\n");
                let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
                let [method, authority, _] = first[..] else {
                    return;
                };
                let auth = lines
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
                    .map(|(_, v)| v.trim().to_owned());
                if method != "CONNECT" {
                    let _ = client
                        .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                if let Some(want) = basic {
                    if auth.as_deref() != Some(&format!("Basic {want}")) {
                        let _ = client.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\ncontent-length: 0\r\n\r\n").await;
                        return;
                    }
                }
                s.0.lock().unwrap().push(authority.to_owned());
                let Some((host, port)) = authority.rsplit_once(':') else {
                    return;
                };
                let Some(mut up) = dial(host, port.parse().unwrap_or(0)).await else {
                    let _ = client
                        .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                };
                let _ = client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (port, seen)
}

/// A SOCKS5 server: no authentication, or username/password when given.
async fn socks5_proxy(creds: Option<(&'static str, &'static str)>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let _ = socks5_session(client, creds, s).await;
            });
        }
    });
    (port, seen)
}

async fn socks5_session(
    mut c: TcpStream,
    creds: Option<(&str, &str)>,
    seen: Seen,
) -> std::io::Result<()> {
    // Greeting: VER, NMETHODS, METHODS.
    let mut hdr = [0u8; 2];
    c.read_exact(&mut hdr).await?;
    assert_eq!(hdr[0], 5, "SOCKS version");
    let mut methods = vec![0u8; hdr[1] as usize];
    c.read_exact(&mut methods).await?;
    let want = if creds.is_some() { 2 } else { 0 };
    if !methods.contains(&want) {
        c.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    c.write_all(&[5, want]).await?;
    if let Some((user, pass)) = creds {
        // RFC 1929: VER 1, ULEN, UNAME, PLEN, PASSWD.
        let mut v = [0u8; 2];
        c.read_exact(&mut v).await?;
        let mut u = vec![0u8; v[1] as usize];
        c.read_exact(&mut u).await?;
        let mut pl = [0u8; 1];
        c.read_exact(&mut pl).await?;
        let mut p = vec![0u8; pl[0] as usize];
        c.read_exact(&mut p).await?;
        let ok = u == user.as_bytes() && p == pass.as_bytes();
        c.write_all(&[1, if ok { 0 } else { 1 }]).await?;
        if !ok {
            return Ok(());
        }
    }
    // Request: VER, CMD (1: CONNECT), RSV, ATYP, address, port.
    let mut req = [0u8; 4];
    c.read_exact(&mut req).await?;
    assert_eq!(req[1], 1, "CONNECT");
    let host = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            c.read_exact(&mut a).await?;
            std::net::Ipv4Addr::from(a).to_string()
        }
        3 => {
            let mut l = [0u8; 1];
            c.read_exact(&mut l).await?;
            let mut name = vec![0u8; l[0] as usize];
            c.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).to_string()
        }
        _ => {
            c.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
            return Ok(());
        }
    };
    let mut p = [0u8; 2];
    c.read_exact(&mut p).await?;
    let port = u16::from_be_bytes(p);
    seen.0.lock().unwrap().push(format!("{host}:{port}"));
    let Some(mut up) = dial(&host, port).await else {
        // 4: host unreachable.
        c.write_all(&[5, 4, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    };
    c.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 0]).await?;
    let _ = tokio::io::copy_bidirectional(&mut c, &mut up).await;
    Ok(())
}

async fn chat(gw: &Gateway, model: &str, stream: bool) -> (u16, String) {
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn provider(id: &str, base_url: &str, proxy_url: &str, extra: &str) -> String {
    format!(
        "  - {{ id: {id}, kind: openai, base_url: \"{base_url}\", api_keys: [sk-{id}], models: [m], proxy_url: \"{proxy_url}\"{extra} }}\n"
    )
}

#[tokio::test]
async fn an_http_connect_proxy_carries_plain_and_tls_requests() {
    let (proxy, seen) = connect_proxy(Some("dXNlcjpwQHNz")).await; // user:p@ss
    let (open_proxy, _) = connect_proxy(None).await;
    let up = MockProvider::start(|r, _| {
        if r.method == "POST" && r.json()["stream"] == true {
            Reply::sse(&openai_stream("m", &["through", " the tunnel"]))
        } else {
            Reply::json(200, openai_completion("m", "through the tunnel"))
        }
    })
    .await;
    let certs = TempDir::new();
    make_certs(&certs.0);
    let tls = MockProvider::start_tls(
        &certs.0.join("leaf.pem"),
        &certs.0.join("leaf.key"),
        |_, _| Reply::json(200, openai_completion("m", "tls in the tunnel")),
    )
    .await;
    let port = up.base_url().rsplit(':').next().unwrap().to_owned();
    let tls_port = tls.base_url().rsplit(':').next().unwrap().to_owned();
    let cfg = format!(
        "auth:\n  open: true\n  admin_keys: [{ADMIN}]\nproviders:\n{}{}{}",
        provider(
            "plain",
            &format!("http://{NAME}:{port}"),
            &format!("http://user:p%40ss@127.0.0.1:{proxy}"),
            ""
        ),
        provider(
            "secure",
            &format!("https://localhost:{tls_port}"),
            &format!("http://127.0.0.1:{open_proxy}"),
            &format!(", ca_file: \"{}\"", certs.0.join("ca.pem").display())
        ),
        provider(
            "wrongpass",
            &format!("http://{NAME}:{port}"),
            &format!("http://user:nope@127.0.0.1:{proxy}"),
            ", connect_timeout_ms: 2000"
        ),
    );
    let gw = Gateway::start(&cfg).await;

    let (status, body) = chat(&gw, "plain/m", false).await;
    assert_eq!(status, 200, "{body}\n{}", gw.log());
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "through the tunnel");
    assert_eq!(
        up.last().header("host"),
        Some(format!("{NAME}:{port}").as_str())
    );
    let (status, body) = chat(&gw, "plain/m", true).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("the tunnel") && body.contains("[DONE]"),
        "{body}"
    );
    assert!(
        seen.targets()
            .iter()
            .all(|t| *t == format!("{NAME}:{port}"))
            && !seen.targets().is_empty(),
        "{:?}",
        seen.targets()
    );

    // TLS to the provider inside the tunnel: SNI and certificate checks of
    // the provider's own name, as on a direct connection.
    let (status, body) = chat(&gw, "secure/m", false).await;
    assert_eq!(status, 200, "{body}\n{}", gw.log());
    assert!(body.contains("tls in the tunnel"), "{body}");
    assert_eq!(
        tls.sni.lock().unwrap().first().map(String::as_str),
        Some("localhost")
    );

    // The proxy refuses the credentials: a connect failure of that
    // provider, in the client's shape; the provider hears nothing.
    let before = up.count();
    let (status, body) = chat(&gw, "wrongpass/m", false).await;
    assert_eq!(status, 502, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wrongpass/m: connect failed"),
        "{v}"
    );
    assert_eq!(up.count(), before);
    // The password shows nowhere: not in /providers, not in the log.
    let providers = gw.get_json("/providers", ADMIN).await.to_string();
    assert!(
        providers.contains(&format!("\"proxy_url\":\"http://127.0.0.1:{proxy}\"")),
        "{providers}"
    );
    for text in [providers, gw.log()] {
        assert!(
            !text.contains("p%40ss") && !text.contains("p@ss") && !text.contains("nope"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_socks5_proxy_carries_requests_by_name_or_by_address() {
    let (authed, seen_authed) = socks5_proxy(Some(("u", "secret-pass"))).await;
    let (open, seen_open) = socks5_proxy(None).await;
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "via socks"))).await;
    let port = up.base_url().rsplit(':').next().unwrap().to_owned();
    let cfg = format!(
        "providers:\n{}{}{}",
        // socks5h: the proxy resolves the provider's name.
        provider(
            "byname",
            &format!("http://{NAME}:{port}"),
            &format!("socks5h://u:secret-pass@127.0.0.1:{authed}"),
            ""
        ),
        // socks5: the gateway resolves it and asks for the address.
        provider(
            "byaddr",
            &format!("http://127.0.0.1:{port}"),
            &format!("socks5://127.0.0.1:{open}"),
            ""
        ),
        provider(
            "badauth",
            &format!("http://{NAME}:{port}"),
            &format!("socks5h://u:wrong@127.0.0.1:{authed}"),
            ", connect_timeout_ms: 2000"
        ),
    );
    let gw = Gateway::start(&cfg).await;
    for model in ["byname/m", "byaddr/m"] {
        let (status, body) = chat(&gw, model, false).await;
        assert_eq!(status, 200, "{model}: {body}\n{}", gw.log());
        assert!(body.contains("via socks"), "{body}");
    }
    assert_eq!(seen_authed.targets(), [format!("{NAME}:{port}")]);
    assert_eq!(seen_open.targets(), [format!("127.0.0.1:{port}")]);
    let before = up.count();
    let (status, body) = chat(&gw, "badauth/m", false).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(up.count(), before);
    assert!(!gw.log().contains("secret-pass") && !gw.log().contains(":wrong@"));
}

#[test]
fn a_bad_proxy_url_is_named_by_its_key_and_never_echoed() {
    let (ok, out) = check_config_text(
        "providers:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", proxy_url: \"https://u:hunter2@proxy:8443\" }\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("providers[0].proxy_url: scheme \"https\""),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "{out}");
}
