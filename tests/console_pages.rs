//! The console's System, App Log, Routing and config-editing pages through
//! the real binary: their JSON API (`/admin/system`, `/admin/reload`,
//! `/admin/logs`, `/admin/routing`, `/admin/config/file`) and the pages in
//! a real headless Chromium.

use crate::cdp;
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-secret-pages";
const PROVIDER_KEY: &str = "sk-provider-secret-pages-4321";

/// One openai-kind provider `a` (its key from `${PAGES_PROVIDER_KEY}`,
/// `key_line` replacing that when given) behind logical model `duo`, and
/// `extra` appended.
fn config(up: &MockProvider, key_line: Option<&str>, extra: &str) -> String {
    let keys = key_line.unwrap_or("api_keys: [\"${PAGES_PROVIDER_KEY}\"]");
    format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key }}\n  admin_keys: [{ADMIN}]\nproviders:\n  - id: a\n    kind: openai\n    base_url: \"{}\"\n    {keys}\nmodels:\n  - name: duo\n    upstreams: [{{ provider: a, model: m-a }}]\n{extra}",
        up.base_url()
    )
}

async fn start(body: &str) -> Gateway {
    Gateway::start_with_env(body, &[("PAGES_PROVIDER_KEY", PROVIDER_KEY)]).await
}

async fn admin(
    gw_url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = client()
        .request(method, format!("{gw_url}{path}"))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.expect("admin request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    assert!(
        !text.contains(PROVIDER_KEY),
        "{path} answered the provider key: {text}"
    );
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(gw: &Gateway, path: &str) -> Value {
    let (status, v) = admin(&gw.url(), reqwest::Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

async fn reload(gw: &Gateway) -> (u16, Value) {
    admin(&gw.url(), reqwest::Method::POST, "/admin/reload", None).await
}

async fn put_file(gw: &Gateway, text: &str, version: &str) -> (u16, Value) {
    admin(
        &gw.url(),
        reqwest::Method::PUT,
        "/admin/config/file",
        Some(json!({"text": text, "version": version})),
    )
    .await
}

fn logical_models(cfg: &Value) -> Vec<String> {
    cfg["models"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn backup(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

#[tokio::test]
async fn new_endpoints_are_admin_only() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m-a", "hi"))).await;
    // Room for every refused request below before the gate's lockout (429).
    let body =
        config(&up, None, "").replace("auth:\n", "auth:\n  admin_failures_per_minute: 100\n");
    let gw = start(&body).await;
    for (method, path) in [
        (reqwest::Method::GET, "/admin/system"),
        (reqwest::Method::POST, "/admin/reload"),
        (reqwest::Method::GET, "/admin/logs"),
        (reqwest::Method::GET, "/admin/routing"),
        (reqwest::Method::GET, "/admin/config/file"),
        (reqwest::Method::PUT, "/admin/config/file"),
    ] {
        let url = format!("{}{path}", gw.url());
        let none = client().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without a key");
        let client_key = client()
            .request(method.clone(), &url)
            .bearer_auth("alice-key")
            .send()
            .await
            .unwrap();
        assert_eq!(
            client_key.status(),
            403,
            "{method} {path} with a client key"
        );
    }
    // Nothing was reloaded by the refused POSTs, nothing written by the PUTs.
    assert!(get(&gw, "/admin/system").await["last_reload"].is_null());
    assert!(!backup(&gw.config_path).exists());
}

#[tokio::test]
async fn the_reload_button_reloads_as_sighup_does_and_says_what_happened() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m-a", "hi"))).await;
    let gw = start(&config(&up, None, "")).await;
    let sys = get(&gw, "/admin/system").await;
    assert_eq!(sys["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(sys["pid"], gw.pid());
    assert_eq!(
        sys["config_file"],
        gw.config_path.display().to_string(),
        "{sys}"
    );
    let listening = sys["listening"].to_string();
    assert!(
        listening.contains(&format!("127.0.0.1:{}", gw.port)),
        "{sys}"
    );
    assert!(
        listening.contains(&format!("127.0.0.1:{}", gw.metrics_port)),
        "{sys}"
    );
    assert!(sys["last_reload"].is_null());

    // A change to the file, taken by the button: the log says so and the
    // new logical model is served.
    let original = std::fs::read_to_string(&gw.config_path).unwrap();
    let with_solo =
        format!("{original}  - name: solo\n    upstreams: [{{ provider: a, model: m-a }}]\n");
    std::fs::write(&gw.config_path, &with_solo).unwrap();
    let (status, r) = reload(&gw).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["reload"]["result"], "ok");
    gw.expect_log("config reloaded from").await;
    assert!(logical_models(&get(&gw, "/admin/config").await).contains(&"solo".to_owned()));
    let chat = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key")
        .json(&json!({"model": "solo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);

    // A bad file: refused with the reason, the running config stays, the
    // System page says so, and the App Log shows the line the log has.
    std::fs::write(
        &gw.config_path,
        with_solo.replace("kind: openai", "kind: not-a-kind"),
    )
    .unwrap();
    let (status, r) = reload(&gw).await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(r["reload"]["result"], "refused");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("providers[0].kind"), "{message}");
    let log = gw.log_until("config reload rejected").await;
    let sys = get(&gw, "/admin/system").await;
    assert_eq!(sys["last_reload"]["result"], "refused", "{sys}");
    assert!(logical_models(&get(&gw, "/admin/config").await).contains(&"solo".to_owned()));
    let logs = get(&gw, "/admin/logs?level=error&limit=50").await;
    let line = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("config reload rejected")
        })
        .unwrap_or_else(|| panic!("no reload line in {logs}"));
    assert_eq!(line["level"], "ERROR");
    let shown = line["message"].as_str().unwrap();
    assert!(
        log.lines().any(|l| l.ends_with(shown)),
        "the page shows the log's own line: {shown}\n{log}"
    );
    assert!(!log.contains(PROVIDER_KEY), "the log has the key");
    // Levels and bounds of the query.
    let warn = get(&gw, "/admin/logs?level=warn&limit=1").await;
    assert_eq!(warn["lines"].as_array().unwrap().len(), 1);
    let (status, _) = admin(
        &gw.url(),
        reqwest::Method::GET,
        "/admin/logs?level=info",
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = admin(&gw.url(), reqwest::Method::GET, "/admin/logs?limit=x", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_edit_is_checked_like_dash_t_written_atomically_and_reloaded() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m-a", "hi"))).await;
    let gw = start(&config(&up, None, "")).await;
    let path = gw.config_path.clone();
    let on_disk = std::fs::read_to_string(&path).unwrap();
    let res = client()
        .get(format!("{}/admin/config/file", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let f: Value = res.json().await.unwrap();
    assert_eq!(f["text"], on_disk.as_str(), "the file as written");
    assert!(on_disk.contains("${PAGES_PROVIDER_KEY}"), "unexpanded");
    let version = f["version"].as_str().unwrap().to_owned();

    // A bad edit: 400 naming the key path; nothing written, no backup.
    let bad = on_disk.replace("base_url: \"", "base_url: \"ftp-nope");
    let (status, r) = put_file(&gw, &bad, &version).await;
    assert_eq!(status, 400, "{r}");
    let paths: Vec<&str> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(paths.contains(&"providers[0].base_url"), "{r}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), on_disk);
    assert!(!backup(&path).exists());
    // The refusal is a warn line of the log, and of the App Log.
    let log = gw.log_until("config edit from the console refused").await;
    let warn = get(&gw, "/admin/logs?level=warn").await;
    let line = warn["lines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .unwrap()
                .contains("config edit from the console refused")
        })
        .unwrap_or_else(|| panic!("no refusal line in {warn}"));
    assert_eq!(line["level"], "WARN");
    assert!(log
        .lines()
        .any(|l| l.contains(" WARN ") && l.ends_with(line["message"].as_str().unwrap())));
    assert!(
        get(&gw, "/admin/logs?level=error").await["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["level"] == "ERROR"),
        "level=error holds errors only"
    );
    let yaml = "providers: [ {";
    let (status, r) = put_file(&gw, yaml, &version).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), on_disk);
    // No scratch file is left beside the config.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // A good edit: written, the old file kept as .bak, reloaded.
    let good =
        format!("{on_disk}  - name: edited\n    upstreams: [{{ provider: a, model: m-a }}]\n");
    let (status, r) = put_file(&gw, &good, &version).await;
    assert_eq!(status, 200, "{r}");
    // `-t`'s warnings come back (the harness's admin key is short).
    assert!(r["warnings"].to_string().contains("auth.admin_keys"), "{r}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    assert_eq!(std::fs::read_to_string(backup(&path)).unwrap(), on_disk);
    assert!(logical_models(&get(&gw, "/admin/config").await).contains(&"edited".to_owned()));
    gw.expect_log("written from the console").await;
    gw.expect_log("config reloaded from").await;
    let new_version = r["version"].as_str().unwrap().to_owned();
    assert_ne!(new_version, version);

    // The version read before that edit is stale now: 409, file unchanged.
    let (status, r) = put_file(&gw, &on_disk, &version).await;
    assert_eq!(status, 409, "{r}");
    assert_eq!(r["version"], new_version.as_str());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), good);
    // Changed on disk behind the console's back: stale too.
    std::fs::write(&path, format!("{good}# edited by hand\n")).unwrap();
    let (status, _) = put_file(&gw, &good, &new_version).await;
    assert_eq!(status, 409);
    let (status, _) = admin(
        &gw.url(),
        reqwest::Method::PUT,
        "/admin/config/file",
        Some(json!({"text": good})),
    )
    .await;
    assert_eq!(status, 400, "the version is required");
}

#[tokio::test]
async fn the_routing_page_shows_an_open_breaker_after_failures() {
    let up = MockProvider::always(Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
    let gw = start(&config(
        &up,
        None,
        "routing:\n  scoring: { mode: weighted }\n  breaker: { consecutive_failures: 1, open_ms: 600000, max_open_ms: 600000 }\n",
    ))
    .await;
    let before = get(&gw, "/admin/routing").await;
    assert_eq!(before["scoring"]["mode"], "weighted");
    assert_eq!(before["breaker"]["consecutive_failures"], 1);
    assert_eq!(
        before["providers"][0]["key_strategy"], "round-robin",
        "{before}"
    );
    assert_eq!(before["providers"][0]["breakers_not_closed"], 0);
    let res = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key")
        .json(&json!({"model": "duo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_server_error(), "{}", res.status());
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let r = get(&gw, "/admin/routing").await;
        if r["providers"][0]["breakers_not_closed"] == 1 {
            break r;
        }
        assert!(Instant::now() < deadline, "no open breaker: {r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let model = &r["providers"][0]["models"][0];
    assert_eq!(model["model"], "m-a");
    assert_eq!(model["breaker"], "open");
    assert!(model["open_until_ms"].as_u64().unwrap() > r["now_ms"].as_u64().unwrap());
    // The same state /providers/{id}/health reports.
    let health = get(&gw, "/providers/a/health").await;
    assert_eq!(health["models"][0]["breaker"], "open");
}

/// A gateway from APIProxy's environment (no config file) on loopback.
struct EnvGateway {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Drop for EnvGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn without_a_file_the_editor_says_so_and_a_write_is_refused() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "hi"))).await;
    let port = free_port();
    let dir = TempDir::new();
    let log = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
    // The developer's own keys stay out (before ours are set: one of them
    // is APIPROXY_ADMIN_KEY).
    for k in PROVIDER_KEY_VARS {
        cmd.env_remove(k);
    }
    cmd.current_dir(&dir.0)
        .env("APIPROXY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LLM_PROVIDERS", "up")
        .env("LLM_PROVIDER_up_BASE_URL", up.base_url())
        .env("LLM_PROVIDER_up_API_KEY", PROVIDER_KEY)
        .env("APIPROXY_ADMIN_KEY", ADMIN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let g = EnvGateway {
        child: cmd.spawn().unwrap(),
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + WAIT;
    while client()
        .get(format!("{}/health", g.url))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, f) = admin(&g.url, reqwest::Method::GET, "/admin/config/file", None).await;
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["editable"], false);
    assert!(f["file"].is_null());
    assert!(
        f["reason"].as_str().unwrap().contains("no config file"),
        "{f}"
    );
    let (status, r) = admin(
        &g.url,
        reqwest::Method::PUT,
        "/admin/config/file",
        Some(json!({"text": "providers: []", "version": "x"})),
    )
    .await;
    assert_eq!(status, 409, "{r}");
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no config file"));
    let (_, sys) = admin(&g.url, reqwest::Method::GET, "/admin/system", None).await;
    assert!(sys["config_file"].is_null());
    assert_eq!(sys["config_source"], "environment (LLM_PROVIDERS)");
    // The reload button re-reads the environment, as SIGHUP does.
    let (status, r) = admin(&g.url, reqwest::Method::POST, "/admin/reload", None).await;
    assert_eq!(status, 200, "{r}");
}

/// Opens a page of the console (by its hash) and waits until it has drawn.
async fn open(b: &mut cdp::Browser, page: &str) {
    b.eval(&format!("location.hash = '#/{page}'; true")).await;
    b.wait_for(&format!(
        "document.querySelector('#page').dataset.ready === '{page}'"
    ))
    .await;
}

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_pages_in_a_real_browser() {
    let up = MockProvider::always(Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
    let gw = start(&config(
        &up,
        None,
        "routing:\n  breaker: { consecutive_failures: 1, open_ms: 600000, max_open_ms: 600000 }\n",
    ))
    .await;
    let failed = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth("alice-key")
        .json(&json!({"model": "duo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert!(failed.status().is_server_error());
    let shots = screenshots();
    let mut b = cdp::Browser::launch().await;
    b.viewport(1280, 800, false).await;
    b.navigate(&format!("{}/ui/", gw.url())).await;
    b.wait_for(
        "document.querySelector('#signin-view') && !document.querySelector('#signin-view').hidden",
    )
    .await;
    b.eval(&format!(
        "document.querySelector('#admin-key').value = '{ADMIN}'; document.querySelector('#signin').requestSubmit(); true"
    ))
    .await;
    b.wait_for("document.querySelector('#page').dataset.ready === 'overview'")
        .await;

    // Routing: the breaker the failed request opened.
    open(&mut b, "routing").await;
    b.wait_for("document.querySelector('[data-provider=a] tr[data-model=\"m-a\"]')?.dataset.breaker === 'open'")
        .await;
    let mode = b
        .eval("document.querySelector('#scoring-mode').textContent")
        .await;
    assert_eq!(mode, "adaptive");
    b.screenshot(&shots.join("routing.png")).await;

    // System: the reload button reloads, and the last reload shows it.
    open(&mut b, "system").await;
    let config_shown = b
        .eval("document.querySelector('#sys-config').textContent")
        .await;
    assert_eq!(config_shown, gw.config_path.display().to_string());
    b.eval("document.querySelector('#reload-button').click(); true")
        .await;
    b.wait_for("document.querySelector('#reload-result [data-result=ok]')")
        .await;
    gw.expect_log("config reloaded from").await;
    b.wait_for("document.querySelector('#last-reload')?.dataset.result === 'ok'")
        .await;
    b.screenshot(&shots.join("system.png")).await;

    // Edit: a bad edit shows its problem by key path and writes nothing;
    // a good one is saved and reloaded.
    let on_disk = std::fs::read_to_string(&gw.config_path).unwrap();
    open(&mut b, "edit").await;
    let shown = b.eval("document.querySelector('#config-text').value").await;
    assert_eq!(shown, on_disk.as_str());
    b.eval("{ const t = document.querySelector('#config-text'); t.value = t.value.replace('kind: openai', 'kind: bogus'); document.querySelector('#save-config').click(); } true")
        .await;
    let path = b
        .wait_for("document.querySelector('#config-problems li')?.dataset.path")
        .await;
    assert_eq!(path, "providers[0].kind");
    assert_eq!(std::fs::read_to_string(&gw.config_path).unwrap(), on_disk);
    b.screenshot(&shots.join("edit-problem.png")).await;
    b.eval("{ const t = document.querySelector('#config-text'); t.value = t.value.replace('kind: bogus', 'kind: openai').replace('models:\\n', 'models:\\n  - name: from-ui\\n    upstreams: [{ provider: a, model: m-a }]\\n'); document.querySelector('#save-config').click(); } true")
        .await;
    b.wait_for("document.querySelector('#config-status [data-result=saved]')")
        .await;
    assert!(std::fs::read_to_string(&gw.config_path)
        .unwrap()
        .contains("from-ui"));
    assert_eq!(
        std::fs::read_to_string(backup(&gw.config_path)).unwrap(),
        on_disk
    );
    assert!(logical_models(&get(&gw, "/admin/config").await).contains(&"from-ui".to_owned()));

    // One item at a time: provider a's lines, changed and saved alone.
    b.wait_for("[...document.querySelectorAll('#item-pick option')].some(o => o.textContent === 'logical model from-ui')")
        .await;
    b.eval("{ const p = document.querySelector('#item-pick'); p.value = [...p.options].find(o => o.textContent === 'provider a').value; p.dispatchEvent(new Event('change')); } true")
        .await;
    let block = b.eval("document.querySelector('#item-text').value").await;
    let block = block.as_str().unwrap();
    assert!(
        block.starts_with("  - id: a\n") && block.contains("${PAGES_PROVIDER_KEY}"),
        "{block:?}"
    );
    assert!(
        !block.contains("models:"),
        "only the provider's lines: {block:?}"
    );
    b.eval("{ const t = document.querySelector('#item-text'); t.value = t.value + '\\n    weight: 3'; document.querySelector('#save-item').click(); } true")
        .await;
    b.wait_for("document.querySelector('#config-status [data-result=saved]') && document.querySelector('#item-text').value.includes('weight: 3')")
        .await;
    let cfg = get(&gw, "/admin/config").await;
    assert_eq!(cfg["providers"][0]["weight"], 3.0, "{cfg}");
    let file = std::fs::read_to_string(&gw.config_path).unwrap();
    assert!(file.contains("    weight: 3\nmodels:"), "{file}");
    b.screenshot(&shots.join("edit-item.png")).await;

    // App log: the refused reload below shows as an error line.
    std::fs::write(
        &gw.config_path,
        on_disk.replace("kind: openai", "kind: not-a-kind"),
    )
    .unwrap();
    let (status, _) = reload(&gw).await;
    assert_eq!(status, 409);
    open(&mut b, "logs").await;
    let text = b
        .wait_for("[...document.querySelectorAll('#app-log tr[data-level=ERROR]')].map(tr => tr.innerText).join('\\n') || undefined")
        .await;
    let text = text.as_str().unwrap();
    assert!(text.contains("config reload rejected"), "{text}");
    let body = b.eval("document.body.innerText").await;
    assert!(!body.as_str().unwrap().contains(PROVIDER_KEY));
    b.screenshot(&shots.join("logs.png")).await;

    // Phone width: the new pages fit without sideways scrolling.
    b.viewport(390, 844, true).await;
    for page in ["routing", "system", "edit", "logs"] {
        open(&mut b, page).await;
        let fits = b
            .eval("document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await;
        assert_eq!(fits, true, "{page} overflows at phone width");
    }
    b.eval("1").await;
    // The refused edit's 400 is the browser's one expected complaint.
    let unexpected: Vec<&String> = b
        .errors
        .iter()
        .filter(|e| !(e.contains("status of 400") && e.contains("/admin/config/file")))
        .collect();
    assert!(
        unexpected.is_empty(),
        "browser console errors: {unexpected:#?}"
    );
}
