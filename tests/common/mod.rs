//! Test harness: mock providers (small HTTP/1.1 servers on loopback speaking
//! the providers' wire formats, with injectable failures), the real
//! `apiproxy` binary on free ports, and a client.
#![allow(dead_code)]

pub mod h2_client;
pub mod prom;
pub mod raw_http;
pub mod wire;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A free loopback port (bound and released), never one handed out before
/// in this test process (the Redis servers' ports included).
pub fn free_port() -> u16 {
    apiproxy_store::testing::free_port()
}

/// A request a mock provider received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the whole request had arrived (orders attempts across mocks).
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A `GET` of a provider's model list (`.../models`, any query).
    pub fn is_model_listing(&self) -> bool {
        let path = self.path.split('?').next().unwrap_or("");
        self.method == "GET" && path.ends_with("/models")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("upstream got a JSON body")
    }
}

/// What a mock provider answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    /// Body pieces, each sent after its delay.
    pub chunks: Vec<(Duration, Vec<u8>)>,
    /// Wait before the response header.
    pub delay: Duration,
    /// Close the connection after this many chunks, mid-body.
    pub cut_after: Option<usize>,
    /// Send the body with chunked encoding (streams).
    pub chunked: bool,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "application/json".into(),
            headers: Vec::new(),
            chunks: vec![(Duration::ZERO, body.into().into_bytes())],
            delay: Duration::ZERO,
            cut_after: None,
            chunked: false,
        }
    }

    /// An SSE stream, one chunk per event (each `event` is sent verbatim
    /// followed by a blank line).
    pub fn sse<S: AsRef<str>>(events: &[S]) -> Reply {
        Reply {
            status: 200,
            content_type: "text/event-stream".into(),
            headers: Vec::new(),
            chunks: events
                .iter()
                .map(|e| (Duration::ZERO, format!("{}\n\n", e.as_ref()).into_bytes()))
                .collect(),
            delay: Duration::ZERO,
            cut_after: None,
            chunked: true,
        }
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    /// Waits `d` before every chunk.
    pub fn pace(mut self, d: Duration) -> Reply {
        for c in &mut self.chunks {
            c.0 = d;
        }
        self
    }

    pub fn cut_after(mut self, n: usize) -> Reply {
        self.cut_after = Some(n);
        self
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
}

type Handler = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// A mock provider on a loopback port.
pub struct MockProvider {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    /// Connections that ended before the response was complete because the
    /// peer (the gateway) closed them.
    pub cancelled: Arc<Mutex<usize>>,
    /// Server names the TLS clients asked for (TLS mocks only).
    pub sni: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockProvider {
    /// Starts a mock; `handler` gets each request and its 0-based number.
    pub async fn start(
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> MockProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(Mutex::new(0));
        let handler: Handler = Arc::new(handler);
        let (reqs, canc) = (requests.clone(), cancelled.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, r, c) = (handler.clone(), reqs.clone(), canc.clone());
                tokio::spawn(async move {
                    let _ = serve_conn(sock, h, r, c).await;
                });
            }
        });
        MockProvider {
            port,
            requests,
            cancelled,
            sni: Default::default(),
            task,
        }
    }

    /// A mock speaking HTTPS with `cert`/`key` (PEM files).
    pub async fn start_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> MockProvider {
        use openssl::ssl::{NameType, Ssl, SslAcceptor, SslFiletype, SslMethod};
        let mut b = SslAcceptor::mozilla_intermediate(SslMethod::tls()).expect("acceptor");
        b.set_private_key_file(key, SslFiletype::PEM).expect("key");
        b.set_certificate_chain_file(cert).expect("cert");
        let acceptor = b.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let cancelled = Arc::new(Mutex::new(0));
        let sni: Arc<Mutex<Vec<String>>> = Default::default();
        let handler: Handler = Arc::new(handler);
        let (reqs, canc, names) = (requests.clone(), cancelled.clone(), sni.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (h, r, c, n) = (handler.clone(), reqs.clone(), canc.clone(), names.clone());
                let Ok(ssl) = Ssl::new(acceptor.context()) else {
                    return;
                };
                tokio::spawn(async move {
                    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, sock) else {
                        return;
                    };
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return;
                    }
                    if let Some(name) = tls.ssl().servername(NameType::HOST_NAME) {
                        n.lock().unwrap().push(name.to_owned());
                    }
                    let _ = serve_conn(tls, h, r, c).await;
                });
            }
        });
        MockProvider {
            port,
            requests,
            cancelled,
            sni,
            task,
        }
    }

    /// Always answers `reply`.
    pub async fn always(reply: Reply) -> MockProvider {
        Self::start(move |_, _| reply.clone()).await
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests other than model listings (the gateway lists a provider's
    /// models at start and on its own schedule, racing any test's requests;
    /// tests about listings read `requests`).
    pub fn count(&self) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| !r.is_model_listing())
            .count()
    }

    /// The newest request other than a model listing.
    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|r| !r.is_model_listing())
            .cloned()
            .expect("the mock got a request")
    }
}

async fn read_request<S: AsyncRead + Unpin>(sock: &mut S, buf: &mut Vec<u8>) -> Option<Recorded> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let mut lines = head.split("\r\n");
            let mut first = lines.next()?.split(' ');
            let method = first.next()?.to_owned();
            let path = first.next()?.to_owned();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let start = end + 4;
            while buf.len() < start + len {
                let mut tmp = vec![0u8; 64 * 1024];
                let n = sock.read(&mut tmp).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = buf[start..start + len].to_vec();
            buf.drain(..start + len);
            return Some(Recorded {
                method,
                path,
                headers,
                body,
                at: Instant::now(),
            });
        }
        let mut tmp = vec![0u8; 64 * 1024];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    handler: Handler,
    reqs: Arc<Mutex<Vec<Recorded>>>,
    cancelled: Arc<Mutex<usize>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(req) = read_request(&mut sock, &mut buf).await {
        let n = {
            let mut r = reqs.lock().unwrap();
            r.push(req.clone());
            r.len() - 1
        };
        let reply = handler(&req, n);
        if !reply.delay.is_zero() {
            // Notice a peer that gives up while we wait.
            let mut probe = [0u8; 1];
            tokio::select! {
                _ = tokio::time::sleep(reply.delay) => {}
                r = sock.read(&mut probe) => {
                    if matches!(r, Ok(0) | Err(_)) {
                        *cancelled.lock().unwrap() += 1;
                        return Ok(());
                    }
                }
            }
        }
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-type: {}\r\n",
            reply.status, reply.content_type
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if reply.chunked {
            head.push_str("transfer-encoding: chunked\r\n\r\n");
        } else {
            let len: usize = reply.chunks.iter().map(|c| c.1.len()).sum();
            head.push_str(&format!("content-length: {len}\r\n\r\n"));
        }
        sock.write_all(head.as_bytes()).await?;
        for (i, (d, c)) in reply.chunks.iter().enumerate() {
            if reply.cut_after == Some(i) {
                sock.shutdown().await?;
                return Ok(());
            }
            if !d.is_zero() {
                // A peer that gives up between chunks (a hedge's loser) is
                // noticed while waiting, not at a later write.
                let mut probe = [0u8; 1];
                tokio::select! {
                    _ = tokio::time::sleep(*d) => {}
                    r = sock.read(&mut probe) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            *cancelled.lock().unwrap() += 1;
                            return Ok(());
                        }
                    }
                }
            }
            let res = if reply.chunked {
                let mut framed = format!("{:x}\r\n", c.len()).into_bytes();
                framed.extend_from_slice(c);
                framed.extend_from_slice(b"\r\n");
                sock.write_all(&framed).await
            } else {
                sock.write_all(c).await
            };
            if res.is_err() {
                *cancelled.lock().unwrap() += 1;
                return Ok(());
            }
        }
        if reply.cut_after.is_some() {
            sock.shutdown().await?;
            return Ok(());
        }
        if reply.chunked {
            sock.write_all(b"0\r\n\r\n").await?;
        }
    }
    Ok(())
}

/// The environment variables `conf/apiproxy.yaml` reads provider and admin
/// keys from; every gateway a test starts runs without them.
pub const PROVIDER_KEY_VARS: [&str; 4] = [
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "APIPROXY_ADMIN_KEY",
];

/// How long the waits of [`Gateway`] wait before they fail the test: long
/// enough for a loaded two-core machine, and a passing wait returns at once.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `check` every 50 ms until it holds or `within` has passed; returns
/// whether it held (which the caller must assert). For state the gateway writes after it answers (tokens,
/// bindings, context, metrics): the bound is generous because the machine
/// running the suite may be busy, and a passing check returns at once.
#[must_use = "assert whether the condition held"]
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], for a value: fetches it every 50 ms until `done`
/// holds or `within` has passed; returns the last value fetched and whether
/// `done` held for it.
#[must_use = "assert whether `done` held"]
pub async fn poll<T, F, Fut>(within: Duration, mut fetch: F, done: impl Fn(&T) -> bool) -> (T, bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + within;
    loop {
        let v = fetch().await;
        if done(&v) {
            return (v, true);
        }
        if Instant::now() > deadline {
            return (v, false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real gateway binary, on a free port, stopped on drop.
pub struct Gateway {
    pub port: u16,
    pub metrics_port: u16,
    child: Child,
    pub config_path: std::path::PathBuf,
    _dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh directory of its own. (Named after a counter, not a free
    /// port: the OS hands the same free port out again, and two tests once
    /// shared a directory that way, one reading the other's config as a
    /// filter file.) `create_dir` fails on a leftover of an earlier run with
    /// the same pid: then the next number is taken.
    pub fn new() -> TempDir {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("apiproxy-test-{}-{n}", std::process::id()));
            match std::fs::create_dir(&p) {
                Ok(()) => return TempDir(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("temp dir {}: {e}", p.display()),
            }
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts the gateway with `body` (YAML without the `server` section,
    /// which is added with free ports) and waits until /health answers.
    pub async fn start(body: &str) -> Gateway {
        Self::start_with_env(body, &[]).await
    }

    pub async fn start_with_env(body: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_opts(body, "", env, None).await
    }

    /// Like [`Gateway::start`], with `server` lines (`key: value`, one per
    /// line) replacing or adding to the harness's `server` section.
    pub async fn start_with_server(server: &str, body: &str) -> Gateway {
        Self::start_opts(body, server, &[], None).await
    }

    /// The general form: extra `server` lines, environment, and an open-file
    /// limit (`ulimit -n`) to run the binary under.
    pub async fn start_opts(
        body: &str,
        server: &str,
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Gateway {
        let dir = TempDir::new();
        let port = free_port();
        let metrics_port = free_port();
        let defaults = format!(
            "listen: 127.0.0.1:{port}\nmetrics_listen: 127.0.0.1:{metrics_port}\nthreads: 2\npid_file: {d}/apiproxy.pid\nupgrade_sock: {d}/upgrade.sock\ngrace_period_seconds: 1\ngraceful_shutdown_timeout_seconds: 1",
            d = dir.0.display()
        );
        let key = |l: &str| l.split(':').next().unwrap_or("").trim().to_owned();
        let overridden: Vec<String> = server.lines().map(key).collect();
        let mut section = String::from("server:\n");
        for l in defaults.lines().chain(server.lines()) {
            let extra = server.lines().any(|x| x == l);
            if l.trim().is_empty() || (!extra && overridden.contains(&key(l))) {
                continue;
            }
            section.push_str(&format!("  {}\n", l.trim()));
        }
        let config = format!("{section}{body}");
        let config_path = dir.0.join("apiproxy.yaml");
        std::fs::File::create(&config_path)
            .and_then(|mut f| f.write_all(config.as_bytes()))
            .expect("write config");
        let log = std::fs::File::create(dir.0.join("stderr.log")).expect("log file");
        let bin = env!("CARGO_BIN_EXE_apiproxy");
        let mut cmd = match nofile {
            None => Command::new(bin),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin);
                c
            }
        };
        cmd.arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log);
        // Provider keys exported in the developer's shell must not reach a
        // test gateway: a config reading them would call a real provider.
        for k in PROVIDER_KEY_VARS {
            cmd.env_remove(k);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn apiproxy");
        let gw = Gateway {
            port,
            metrics_port,
            child,
            config_path,
            _dir: dir,
        };
        gw.wait_ready().await;
        gw
    }

    /// The scratch directory holding the config, the log and the pid file.
    pub fn dir(&self) -> &std::path::Path {
        &self._dir.0
    }

    /// Waits up to `limit` for the process to exit; its status, or `None`
    /// if it is still running.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = format!("{}/health", self.url());
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(&url).await {
                // This gateway's answer, not another server's on the same port.
                let pid = r
                    .headers()
                    .get("x-apiproxy-pid")
                    .and_then(|v| v.to_str().ok());
                if r.status() == 200 && pid == Some(self.child.id().to_string().as_str()) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("apiproxy did not become ready; log:\n{}", self.log());
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the gateway wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.0.join("stderr.log")).unwrap_or_default()
    }

    /// The log once it contains `needle`; fails the test with the log when
    /// it does not within [`WAIT`]. Access lines are buffered for up to
    /// 200 ms before they reach the file.
    #[must_use = "assert on the log, or use `expect_log`"]
    pub async fn log_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "the log never showed {needle:?} within {WAIT:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the log shows `needle` (fails the test when it never does).
    pub async fn expect_log(&self, needle: &str) {
        let _seen = self.log_until(needle).await;
    }

    /// The number of access-log lines written so far.
    pub fn access_lines(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" access] "))
            .count()
    }

    /// The metrics text once it contains `needle`; fails the test with the
    /// last text when it does not within [`WAIT`].
    #[must_use = "assert on the metrics"]
    pub async fn metrics_until(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.metrics().await;
            if m.contains(needle) {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "the metrics never showed {needle:?} within {WAIT:?}:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The metrics once the samples of `name` whose labels include `with`
    /// add up to at least `at_least`; fails the test with the last sum and
    /// text when they do not within [`WAIT`]. Requests are counted in the
    /// logging phase, just after the client has its answer: a test that
    /// counts several waits for all of them with this.
    #[must_use = "assert on the metrics"]
    pub async fn metrics_when(&self, name: &str, with: &[(&str, &str)], at_least: f64) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let m = self.metrics().await;
            let sum = prom::sum(&m, name, with);
            if sum >= at_least {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{with:?} summed {sum}, never {at_least}, within {WAIT:?}:\n{m}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The sum of the samples of metric `name` whose labels include `with`.
    pub async fn metric(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        prom::sum(&self.metrics().await, name, with)
    }

    /// `GET path` on the gateway with `bearer`, the answer as JSON.
    pub async fn get_json(&self, path: &str, bearer: &str) -> serde_json::Value {
        client()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(bearer)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON answer")
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// A reqwest client for tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// OpenAI chat-completion JSON with `text`.
pub fn openai_completion(model: &str, text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    })
    .to_string()
}

/// OpenAI chat SSE events for `words` (with a usage chunk and [DONE]).
pub fn openai_stream(model: &str, words: &[&str]) -> Vec<String> {
    let mut ev = vec![format!(
        r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"{model}","choices":[{{"index":0,"delta":{{"role":"assistant","content":""}},"finish_reason":null}}]}}"#
    )];
    for w in words {
        ev.push(format!(
            r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"{model}","choices":[{{"index":0,"delta":{{"content":"{w}"}},"finish_reason":null}}]}}"#
        ));
    }
    ev.push(format!(
        r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"{model}","choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#
    ));
    ev.push(format!(
        r#"data: {{"id":"c1","object":"chat.completion.chunk","created":1,"model":"{model}","choices":[],"usage":{{"prompt_tokens":5,"completion_tokens":{},"total_tokens":{}}}}}"#,
        words.len(),
        5 + words.len()
    ));
    ev.push("data: [DONE]".into());
    ev
}

/// The JSON payloads of the `data:` lines of an SSE body.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Waits until something listens on loopback `port` (read from
/// `/proc/net/tcp`, so no connection is made: a probe would hold one of the
/// gateway's connection slots). The gateway answers /health once its plain
/// listener is up; its TLS listener is a service of its own, bound a moment
/// later. Fails the test after [`WAIT`].
pub async fn wait_listening(port: u16) {
    let needle = format!(":{port:04X} ");
    let listening = || {
        ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
            std::fs::read_to_string(f).is_ok_and(|t| {
                t.lines().any(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    // local_address, then rem_address, then st (0A: LISTEN).
                    cols.len() > 3 && format!("{} ", cols[1]).ends_with(&needle) && cols[3] == "0A"
                })
            })
        })
    };
    let deadline = Instant::now() + WAIT;
    while !listening() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A CA and a certificate for `localhost` signed by it, made with the
/// openssl command line: `ca.pem`, `leaf.pem`, `leaf.key` in `dir`.
pub fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=apiproxy test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}

/// A self-signed certificate for `cn` (P-256) written to `dir`.
pub fn self_signed(dir: &std::path::Path, name: &str, cn: &str) -> (String, String) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-days",
            "2",
            "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl CLI (scripts/bootstrap.sh installs it)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

/// `apiproxy -t` on a config file holding `yaml`: whether it passed, and
/// what it printed (stdout and stderr together).
pub fn check_config_text(yaml: &str) -> (bool, String) {
    let dir = TempDir::new();
    let path = dir.0.join("apiproxy.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&path)
        .output()
        .expect("run apiproxy -t");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
