//! Operations through the real binary: config reload on SIGHUP, graceful
//! binary upgrade with an in-flight stream, and both under keep-alive load
//! with live streams (nothing may be lost).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::raw_http::{header_of, KeptAlive};
use common::*;
use serde_json::{json, Value};

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

async fn status_for(gw_url: &str, model: &str) -> u16 {
    client()
        .post(format!("{gw_url}/v1/chat/completions"))
        .json(&json!({"model": model, "messages": []}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn sighup_reloads_the_config_and_rejects_a_bad_one() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let providers = format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
        up.base_url()
    );
    let gw = Gateway::start(&format!(
        "{providers}models:\n  - {{ name: one, upstreams: [{{ provider: p, model: m }}] }}\n"
    ))
    .await;
    assert_eq!(status_for(&gw.url(), "one").await, 200);
    assert_eq!(status_for(&gw.url(), "two").await, 404);

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let with_two = text.replace(
        "- { name: one,",
        "- { name: two, upstreams: [{ provider: p, model: m }] }\n  - { name: one,",
    );
    std::fs::write(&gw.config_path, &with_two).unwrap();
    signal(gw.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_for(&gw.url(), "two").await != 200 {
        assert!(
            Instant::now() < deadline,
            "reload did not happen; log:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file is rejected with a logged error; the running config stays.
    std::fs::write(
        &gw.config_path,
        with_two.replace("kind: openai", "kind: nonsense"),
    )
    .unwrap();
    signal(gw.pid(), "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("config reload rejected") {
        assert!(
            Instant::now() < deadline,
            "no rejection logged:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.log().contains("providers[0].kind"), "{}", gw.log());
    assert_eq!(status_for(&gw.url(), "two").await, 200);
    assert_eq!(status_for(&gw.url(), "one").await, 200);
}

/// A process started with `-u` to take over from a running one.
struct Successor {
    child: Child,
    log: PathBuf,
}

impl Successor {
    /// Starts `apiproxy -u` with `config` and waits until it listens on the
    /// upgrade socket (it then waits there for the old process's sockets).
    async fn start(config: &Path, name: &str) -> Successor {
        let sock = config.with_file_name("upgrade.sock");
        let _ = std::fs::remove_file(&sock);
        let log = config.with_file_name(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
            .arg("-u")
            .arg("-c")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the new apiproxy");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "{name} never listened on {sock:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Successor { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid in `x-apiproxy-pid` of `/health` on a fresh connection.
async fn health_pid(url: &str) -> Option<u32> {
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let r = c.get(format!("{url}/health")).send().await.ok()?;
    r.headers()
        .get("x-apiproxy-pid")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Writes a request on a raw kept-alive connection and reads one whole
/// response (content-length framing): the head, lower-cased.
async fn raw_get(sock: &mut tokio::net::TcpStream, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text[..end].to_owned());
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut tmp))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The text of an OpenAI chat stream's deltas, and whether `[DONE]` is its
/// last event.
fn stream_text(body: &str) -> (String, bool) {
    let data = sse_data(body);
    let text = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    (text, data.last().map(String::as_str) == Some("[DONE]"))
}

/// Pingora keeps an old process accepting for 5 s after SIGQUIT (its accept
/// window), then drains for `grace_period_seconds`. This test holds a stream
/// on the old process from before SIGQUIT to well after the accept window,
/// keeps an idle kept-alive connection to it across the start of draining,
/// tells the processes apart by pid, and checks how both end.
#[tokio::test]
async fn graceful_upgrade_hands_over_sockets_and_drains_streams() {
    // 16 events, 500 ms apart: 8 s, past the 5 s accept window and 3 s into
    // the 6 s grace period.
    let words: Vec<String> = (0..16).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let up = MockProvider::always(
        Reply::sse(&openai_stream("m", &refs)).pace(Duration::from_millis(500)),
    )
    .await;
    let mut old = Gateway::start_with_server(
        "grace_period_seconds: 6",
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
    )
    .await;
    let url = old.url();
    assert_eq!(health_pid(&url).await, Some(old.pid()));

    // A kept-alive connection to the old process, then left idle.
    let mut kept = tokio::net::TcpStream::connect(("127.0.0.1", old.port))
        .await
        .unwrap();
    let head = raw_get(&mut kept, "/health").await.expect("first answer");
    assert_eq!(
        header_of(&head, "x-apiproxy-pid"),
        Some(old.pid().to_string().as_str())
    );
    assert_ne!(header_of(&head, "connection"), Some("close"));

    let started = Instant::now();
    let stream = tokio::spawn({
        let url = url.clone();
        async move {
            let r = client()
                .post(format!("{url}/v1/chat/completions"))
                .header("x-debug", "true")
                .json(&json!({"model": "p/m", "stream": true, "messages": []}))
                .send()
                .await
                .expect("stream request");
            let pid = r
                .headers()
                .get("x-apiproxy-pid")
                .map(|v| v.to_str().unwrap().to_owned());
            (pid, r.text().await.expect("stream body"), Instant::now())
        }
    });
    // The stream is on the old process (its upstream has the request)
    // before the successor starts.
    let on_old = eventually(WAIT, || async { up.count() == 1 }).await;
    assert!(on_old, "the stream never reached the upstream");

    let mut new = Successor::start(&old.config_path, "new").await;
    signal(old.pid(), "QUIT");
    let quit = Instant::now();

    // Draining begins when the accept window ends: then fresh connections
    // only reach the new process.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !old
        .log()
        .contains("Graceful shutdown: grace period 6s starts")
    {
        assert!(
            Instant::now() < deadline,
            "the old process never drained:\n{}",
            old.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        quit.elapsed() >= Duration::from_secs(4),
        "no accept window?"
    );
    for _ in 0..20 {
        assert_eq!(
            health_pid(&url).await,
            Some(new.pid()),
            "a fresh connection reached the old process while it drained"
        );
    }

    // The idle kept-alive connection was not dropped: its next request is
    // answered by the old process, with `Connection: close`.
    let head = raw_get(&mut kept, "/health")
        .await
        .expect("the idle kept-alive connection was dropped when draining began");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(
        header_of(&head, "x-apiproxy-pid"),
        Some(old.pid().to_string().as_str())
    );
    assert_eq!(header_of(&head, "connection"), Some("close"));

    // The stream on the old process completes in full, after the window.
    let (pid, body, ended) = tokio::time::timeout(Duration::from_secs(20), stream)
        .await
        .expect("stream finished")
        .expect("stream task");
    assert_eq!(
        pid,
        Some(old.pid().to_string()),
        "the stream was not on the old process"
    );
    assert!(ended.duration_since(started) > Duration::from_secs(6));
    let text: String = sse_data(&body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, words.concat(), "{body}");
    assert!(body.contains("[DONE]"));

    // The old process exits cleanly once its grace period is over.
    let status = old
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the old process did not exit after its grace period");
    assert!(status.success(), "old exit: {status:?}\n{}", old.log());
    assert!(old.log().contains("listener sockets sent"), "{}", old.log());

    // The new process: took the sockets over, served, and stops cleanly too.
    let log = new.log();
    assert!(
        log.contains("upgrade: took over the listening sockets"),
        "{log}"
    );
    assert!(!log.contains("Bootstrap failed"), "{log}");
    assert_eq!(health_pid(&url).await, Some(new.pid()));
    signal(new.pid(), "TERM");
    let status = new
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the new process did not exit on SIGTERM");
    assert!(status.success(), "new exit: {status:?}\n{}", new.log());
    assert!(new.log().contains("SIGTERM received"), "{}", new.log());
}

/// Keep-alive clients and streams running against the gateway until
/// `stop`; counts what was sent, answered and failed.
#[derive(Default)]
struct Load {
    sent: AtomicUsize,
    answered: AtomicUsize,
    failed: AtomicUsize,
    streams_started: AtomicUsize,
    streams_completed: AtomicUsize,
    pids: Mutex<std::collections::BTreeSet<u32>>,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 10 {
            e.push(what);
        }
    }

    /// `workers` keep-alive clients sending chat requests back to back, and
    /// `streams` clients each running one stream after another.
    fn run(
        self: &Arc<Self>,
        port: u16,
        workers: usize,
        streams: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let load = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = KeptAlive::new(port);
                let ask = json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]});
                // Bounded: at most 60 s and 100,000 requests per worker.
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..100_000 {
                    if load.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    load.sent.fetch_add(1, Ordering::Relaxed);
                    match c.post(&ask).await {
                        Ok(a) if a.status == 200 => {
                            if let Some(pid) =
                                header_of(&a.head, "x-apiproxy-pid").and_then(|v| v.parse().ok())
                            {
                                load.pids.lock().unwrap().insert(pid);
                            }
                            let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
                            if v["choices"][0]["message"]["content"] == "ok" {
                                load.answered.fetch_add(1, Ordering::Relaxed);
                            } else {
                                load.fail(format!("body: {}", String::from_utf8_lossy(&a.body)));
                            }
                        }
                        Ok(a) => load.fail(format!("status {}", a.status)),
                        Err(e) => load.fail(e),
                    }
                }
            }));
        }
        // Every event of a stream, in order: a stream cut or missing a
        // middle event does not count as completed.
        let whole: String = (0..10).map(|i| format!("s{i}")).collect();
        for _ in 0..streams {
            let (load, whole) = (self.clone(), whole.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = KeptAlive::new(port);
                let ask = json!({"model": "p/s", "stream": true, "messages": []});
                let deadline = Instant::now() + Duration::from_secs(60);
                for _ in 0..1_000 {
                    if load.stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                        break;
                    }
                    load.streams_started.fetch_add(1, Ordering::Relaxed);
                    match c.post(&ask).await {
                        Ok(a) if a.status == 200 => {
                            let body = String::from_utf8_lossy(&a.body).to_string();
                            match stream_text(&body) {
                                (text, true) if text == whole => {
                                    load.streams_completed.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => load.fail(format!("stream: {body}")),
                            }
                        }
                        Ok(a) => load.fail(format!("stream status {}", a.status)),
                        Err(e) => load.fail(format!("stream: {e}")),
                    }
                }
            }));
        }
        tasks
    }

    async fn finish(self: &Arc<Self>, tasks: Vec<tokio::task::JoinHandle<()>>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    }
}

/// A mock answering `p/m` at once and streaming `p/s` for a second.
async fn load_provider() -> MockProvider {
    let words: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    let stream = Reply::sse(&openai_stream("s", &refs)).pace(Duration::from_millis(100));
    let done = Reply::json(200, openai_completion("m", "ok"));
    MockProvider::start(move |req, _| {
        if String::from_utf8_lossy(&req.body).contains("\"stream\":true") {
            stream.clone()
        } else {
            done.clone()
        }
    })
    .await
}

/// Two upgrades in a row while keep-alive clients and streams run: every
/// request is answered and every stream completes, and all three processes
/// served some of them.
#[tokio::test]
async fn upgrades_under_keepalive_load_lose_nothing() {
    let up = load_provider().await;
    // A stream (1 s) may begin on the old process after draining began: a
    // client's kept-alive connection still reaches it, and the answer then
    // says `Connection: close`. It must end within the grace period, which
    // is what cuts work short: 5 s leaves a loaded machine room.
    let mut first = Gateway::start_with_server(
        "grace_period_seconds: 5",
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
    )
    .await;
    let load = Arc::new(Load::default());
    let tasks = load.run(first.port, 8, 3);
    let warm = eventually(WAIT, || async {
        load.answered.load(Ordering::Relaxed) >= 20
            && load.streams_completed.load(Ordering::Relaxed) >= 1
    })
    .await;
    assert!(
        warm,
        "the load never got going: {:?}",
        load.errors.lock().unwrap()
    );

    let mut pids = vec![first.pid()];
    let mut current: Option<Successor> = None;
    for n in 1..=2 {
        let next = Successor::start(&first.config_path, &format!("gen{n}")).await;
        pids.push(next.pid());
        let before = load.sent.load(Ordering::Relaxed);
        match current.as_mut() {
            None => {
                signal(first.pid(), "QUIT");
                let s = first.wait_exit(Duration::from_secs(20)).await;
                assert!(s.is_some_and(|s| s.success()), "{s:?}\n{}", first.log());
            }
            Some(old) => {
                signal(old.pid(), "QUIT");
                let s = old.wait_exit(Duration::from_secs(20)).await;
                assert!(s.is_some_and(|s| s.success()), "{s:?}\n{}", old.log());
            }
        }
        assert!(
            load.sent.load(Ordering::Relaxed) > before,
            "no load during upgrade {n}"
        );
        current = Some(next);
    }
    // The last process serves requests and streams of its own before the
    // load stops.
    let last = *pids.last().expect("pids");
    let streamed = load.streams_completed.load(Ordering::Relaxed);
    let served_by_last = eventually(WAIT, || async {
        load.pids.lock().unwrap().contains(&last)
            && load.streams_completed.load(Ordering::Relaxed) > streamed
    })
    .await;
    assert!(served_by_last, "the last process served nothing");
    load.finish(tasks).await;

    let (sent, answered, failed) = (
        load.sent.load(Ordering::Relaxed),
        load.answered.load(Ordering::Relaxed),
        load.failed.load(Ordering::Relaxed),
    );
    let (started, completed) = (
        load.streams_started.load(Ordering::Relaxed),
        load.streams_completed.load(Ordering::Relaxed),
    );
    let errors = load.errors.lock().unwrap().clone();
    assert_eq!(failed, 0, "sent {sent}, answered {answered}: {errors:?}");
    assert_eq!(answered, sent);
    assert_eq!(completed, started, "{errors:?}");
    assert!(
        sent > 100 && completed > 5,
        "too little load: {sent} / {completed}"
    );
    let served = load.pids.lock().unwrap().clone();
    for pid in &pids {
        assert!(
            served.contains(pid),
            "process {pid} served nothing: {served:?}"
        );
    }
}

/// SIGHUP reloads under the same load lose nothing either.
#[tokio::test]
async fn reloads_under_keepalive_load_lose_nothing() {
    let up = load_provider().await;
    let gw = Gateway::start(&format!(
        "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
        up.base_url()
    ))
    .await;
    let load = Arc::new(Load::default());
    let tasks = load.run(gw.port, 8, 3);
    let reloads = || gw.log().matches("config reloaded").count();
    for i in 1..=3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let answered = load.answered.load(Ordering::Relaxed);
        signal(gw.pid(), "HUP");
        // One reload at a time: signals sent before the previous one was
        // handled coalesce into one. Bounds are generous (busy machine).
        assert!(
            eventually(Duration::from_secs(20), || async { reloads() >= i }).await,
            "reload {i} logged:\n{}",
            gw.log()
        );
        assert!(
            eventually(Duration::from_secs(20), || async {
                load.answered.load(Ordering::Relaxed) > answered
            })
            .await,
            "requests answered across reload {i}"
        );
    }
    // Streams that started after the last reload complete too.
    let started = load.streams_started.load(Ordering::Relaxed);
    let after = eventually(WAIT, || async {
        load.streams_completed.load(Ordering::Relaxed) > started
    })
    .await;
    assert!(after, "no stream completed after the last reload");
    load.finish(tasks).await;
    assert_eq!(reloads(), 3, "{}", gw.log());
    let errors = load.errors.lock().unwrap().clone();
    assert_eq!(load.failed.load(Ordering::Relaxed), 0, "{errors:?}");
    assert_eq!(
        load.streams_completed.load(Ordering::Relaxed),
        load.streams_started.load(Ordering::Relaxed)
    );
}

/// With `store.path`, the old and the new process of an upgrade share the
/// key file: under a stream of anonymous and keyed requests (each on a new
/// connection, so no client retries hide anything), no anonymous request is
/// ever served, and keys made in the console keep working on the new
/// process. (Before, the new process could not open the file the old one
/// held, took "no stored keys" for "no auth", and served everyone.)
#[tokio::test]
async fn console_keys_keep_working_across_an_upgrade_and_nobody_passes_without_one() {
    const ADMIN: &str = "admin-key-upgrade-0123456789abcdef";
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let store = TempDir::new();
    let mut old = Gateway::start_with_server(
        "grace_period_seconds: 2",
        &format!(
            "store:\n  path: {}/keys.redb\nauth:\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: p, kind: openai, base_url: \"{}\", models: [m] }}\n",
            store.0.display(),
            up.base_url()
        ),
    )
    .await;
    let url = old.url();
    let made: Value = client()
        .post(format!("{url}/admin/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "ci"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = made["key"].as_str().expect("a new key").to_owned();

    // (keyed, status, pid) of every request.
    type Seen = Vec<(bool, u16, Option<u32>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (seen, stop, url) = (seen.clone(), stop.clone(), url.clone());
        async move {
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap();
            let mut keyed = false;
            while !stop.load(Ordering::Relaxed) {
                keyed = !keyed;
                let mut r = fresh
                    .post(format!("{url}/v1/chat/completions"))
                    .header("x-debug", "true")
                    .json(
                        &json!({"model": "p/m", "messages": [{"role": "user", "content": "hi"}]}),
                    );
                if keyed {
                    r = r.bearer_auth(&key);
                }
                let (status, pid) = match r.send().await {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.headers()
                            .get("x-apiproxy-pid")
                            .and_then(|v| v.to_str().ok()?.parse().ok()),
                    ),
                    Err(_) => (0, None),
                };
                seen.lock().unwrap().push((keyed, status, pid));
            }
        }
    });
    let going = eventually(WAIT, || async { seen.lock().unwrap().len() >= 10 }).await;
    assert!(going, "the load never got going");
    let mut new = Successor::start(&old.config_path, "new").await;
    signal(old.pid(), "QUIT");
    let exit = old.wait_exit(Duration::from_secs(20)).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", old.log());
    // Some more requests on the new process alone.
    let after = seen.lock().unwrap().len();
    let more = eventually(Duration::from_secs(15), || async {
        seen.lock().unwrap().len() >= after + 20
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(more, "the load stalled after the upgrade");

    let seen = seen.lock().unwrap().clone();
    let anonymous_served: Vec<_> = seen.iter().filter(|(k, s, _)| !k && *s == 200).collect();
    assert!(
        anonymous_served.is_empty(),
        "anonymous requests were served: {anonymous_served:?}\nnew:\n{}",
        new.log()
    );
    let keyed_failed: Vec<_> = seen.iter().filter(|(k, s, _)| *k && *s != 200).collect();
    assert!(
        keyed_failed.is_empty(),
        "keyed requests failed: {keyed_failed:?}\nnew:\n{}",
        new.log()
    );
    let keyed_by_new = seen
        .iter()
        .filter(|(k, s, pid)| *k && *s == 200 && *pid == Some(new.pid()))
        .count();
    assert!(
        keyed_by_new >= 10,
        "the new process served {keyed_by_new} of {} keyed requests",
        seen.iter().filter(|(k, _, _)| *k).count()
    );
    assert!(
        new.wait_exit(Duration::from_millis(1)).await.is_none(),
        "{}",
        new.log()
    );
}
