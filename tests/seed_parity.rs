//! Coming from APIProxy: its environment configuration as its README
//! documents it, through the real binary (README "Coming from APIProxy /
//! AI-Higress / ai-proxy").

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use serde_json::json;

const TOKEN: &str = "team-token-42";
const ADMIN: &str = "admin-key-for-the-console-0123456789";

struct Running {
    child: Child,
    url: String,
    dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }
}

/// The gateway configured by `vars` alone (no file), on loopback.
async fn from_env(vars: &[(&str, String)]) -> Running {
    let port = free_port();
    let dir = TempDir::new();
    let log = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
    cmd.current_dir(&dir.0)
        .env("APIPROXY_LISTEN", format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for k in PROVIDER_KEY_VARS {
        cmd.env_remove(k);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let g = Running {
        child: cmd.spawn().unwrap(),
        url: format!("http://127.0.0.1:{port}"),
        dir,
    };
    let deadline = Instant::now() + WAIT;
    while client()
        .get(format!("{}/health", g.url))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "never listened:\n{}", g.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    g
}

fn sent_token() -> String {
    base64::engine::general_purpose::STANDARD.encode(TOKEN)
}

#[tokio::test]
async fn apiproxy_token_admin_key_and_provider_variables() {
    let up = MockProvider::start(|rec, _| {
        if rec.method == "GET" {
            Reply::json(
                200,
                r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#,
            )
        } else {
            Reply::json(200, openai_completion("m", "from env"))
        }
    })
    .await;
    let g = from_env(&[
        ("LLM_PROVIDERS", "up".into()),
        ("LLM_PROVIDER_up_NAME", "Upstream One".into()),
        // The seed's convention: a base URL with /v1, the default models path.
        ("LLM_PROVIDER_up_BASE_URL", format!("{}/v1", up.base_url())),
        ("LLM_PROVIDER_up_MODELS_PATH", "/v1/models".into()),
        ("LLM_PROVIDER_up_API_KEY", "pk-env-1".into()),
        ("LLM_PROVIDER_up_REGION", "eu-west".into()),
        ("LLM_PROVIDER_up_MAX_QPS", "50".into()),
        ("MODELS_CACHE_TTL", "300".into()),
        // Python's level names: WARNING once stopped the gateway.
        ("LOG_LEVEL", "WARNING".into()),
        ("APIPROXY_AUTH_TOKEN", TOKEN.into()),
        ("APIPROXY_ADMIN_KEY", ADMIN.into()),
        // MASK_AS_BROWSER is on by default in this mode; Origin only when set.
        ("MASK_ORIGIN", "https://chat.example".into()),
    ])
    .await;
    let chat = |auth: Option<(&'static str, String)>| {
        let mut r = client()
            .post(format!("{}/v1/chat/completions", g.url))
            .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}));
        if let Some((h, v)) = auth {
            r = r.header(h, v);
        }
        r.send()
    };
    assert_eq!(
        chat(None).await.unwrap().status(),
        401,
        "a token means clients need it"
    );
    assert_eq!(
        chat(Some(("authorization", format!("Bearer {TOKEN}"))))
            .await
            .unwrap()
            .status(),
        401,
        "the seed's clients send the token base64-encoded, not as it is"
    );
    let ok = chat(Some(("authorization", format!("Bearer {}", sent_token()))))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("from env"));
    assert_eq!(
        chat(Some(("x-api-key", sent_token())))
            .await
            .unwrap()
            .status(),
        200
    );
    let sent = up.last();
    let ua = sent.header("user-agent").unwrap_or_default();
    assert!(
        ua.starts_with("Mozilla/5.0"),
        "a browser's User-Agent: {ua}"
    );
    assert_eq!(sent.header("origin"), Some("https://chat.example"));
    assert_eq!(
        sent.header("referer"),
        None,
        "sent only when MASK_REFERER is set"
    );

    // The token reads the inspection endpoints, as the seed documents.
    let get = |path: &str, key: &str| {
        client()
            .get(format!("{}{path}", g.url))
            .bearer_auth(key)
            .send()
    };
    let r = get("/providers", &sent_token()).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let p = &v["providers"][0];
    assert_eq!(p["id"], "up");
    assert_eq!(p["name"], "Upstream One");
    assert_eq!(p["region"], "eu-west");
    assert_eq!(p["max_qps"], 50);
    assert_eq!(
        p["models_path"], "/v1/models",
        "relative to BASE_URL, /v1 not doubled"
    );
    // APIProxy's documented default.
    assert_eq!(p["retryable_status"], json!([429, 500, "502-504"]));
    assert!(
        !v.to_string().contains("pk-env-1"),
        "never a provider key: {v}"
    );
    assert_eq!(
        get("/logical-models", &sent_token())
            .await
            .unwrap()
            .status(),
        200
    );
    // Work on the upstreams and other keys' state stay the admin's.
    assert_eq!(
        get("/providers/up/models?refresh=1", &sent_token())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get("/routing/sessions/s1", &sent_token())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get("/admin/keys", &sent_token()).await.unwrap().status(),
        403
    );
    // APIPROXY_ADMIN_KEY is the admin key of /admin and the console.
    assert_eq!(get("/admin/keys", ADMIN).await.unwrap().status(), 200);
    assert_eq!(
        get("/providers/up/models?refresh=1", ADMIN)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(get("/providers", "wrong").await.unwrap().status(), 401);

    // The catalog comes from BASE_URL + MODELS_PATH without a doubled /v1.
    let listed = eventually(WAIT, || async {
        up.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/v1/models")
    })
    .await;
    assert!(
        listed,
        "{:?}",
        up.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
    assert!(!g.log().contains(TOKEN), "the token is never logged");
}

/// `-t` on the environment: a token lets the gateway listen on any
/// address; without one, a non-loopback address is refused, naming the
/// variable and never echoing a value.
#[test]
fn a_token_opens_any_address_and_problems_name_variables() {
    let check = |vars: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
        c.arg("-t")
            .env("LLM_PROVIDERS", "up")
            .env("LLM_PROVIDER_up_BASE_URL", "http://127.0.0.1:9")
            .env("APIPROXY_LISTEN", "0.0.0.0:8080");
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        )
    };
    let (ok, out) = check(&[("APIPROXY_AUTH_TOKEN", TOKEN)]);
    assert!(ok, "{out}");
    let (ok, out) = check(&[]);
    assert!(!ok && out.contains("APIPROXY_LISTEN"), "{out}");
    let (ok, out) = check(&[
        ("APIPROXY_AUTH_TOKEN", TOKEN),
        ("MODELS_CACHE_TTL", "soon"),
        ("LLM_PROVIDER_up_MAX_QPS", "many"),
        ("APIPROXY_ADMIN_KEY", "short-secret"),
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("MODELS_CACHE_TTL: not a whole number"),
        "{out}"
    );
    assert!(
        out.contains("LLM_PROVIDER_up_MAX_QPS: not a whole number"),
        "{out}"
    );
    assert!(out.contains("APIPROXY_ADMIN_KEY"), "{out}");
    assert!(
        !out.contains("short-secret") && !out.contains(TOKEN),
        "{out}"
    );
}

/// ai-proxy's global options: a default key strategy, default per-key
/// limits for keys that set none, and model prices for every provider
/// below a provider's own.
#[tokio::test]
async fn global_key_strategy_default_key_limits_and_pricing() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "hi"))).await;
    let priced = MockProvider::always(Reply::json(200, openai_completion("m", "hi"))).await;
    let gw = Gateway::start(&format!(
        r#"auth:
  keys:
    - {{ name: plain, key: sk-client-plain-0001 }}
    - {{ name: own, key: sk-client-own-00001, rpm: 50 }}
  default_key_rpm: 2
routing:
  key_strategy: fill-first
pricing:
  m: {{ input: 1000000, output: 2000000 }}
providers:
  - {{ id: up, kind: openai, base_url: "{}", api_keys: [sk-up-a, sk-up-b], models: [m] }}
  - {{ id: priced, kind: openai, base_url: "{}", api_keys: [sk-up-c], models: [m], pricing: {{ m: {{ input: 0, output: 0 }} }} }}
"#,
        up.base_url(),
        priced.base_url()
    ))
    .await;
    let chat = |key: &'static str, model: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    // `plain` sets no rpm: auth.default_key_rpm (2) is its limit.
    assert_eq!(
        chat("sk-client-plain-0001", "up/m").await.unwrap().status(),
        200
    );
    assert_eq!(
        chat("sk-client-plain-0001", "up/m").await.unwrap().status(),
        200
    );
    let third = chat("sk-client-plain-0001", "up/m").await.unwrap();
    assert_eq!(third.status(), 429, "{}", third.text().await.unwrap());
    // `own` keeps its own rpm.
    for _ in 0..3 {
        assert_eq!(
            chat("sk-client-own-00001", "up/m").await.unwrap().status(),
            200
        );
    }
    // routing.key_strategy fill-first: the first key until it rests, never
    // spread round-robin over both.
    let keys: Vec<Option<String>> = up
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.header("authorization").map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), 5);
    assert!(
        keys.iter().all(|k| k.as_deref() == Some("Bearer sk-up-a")),
        "{keys:?}"
    );
    // The top-level price applies where the provider has none: 7 input
    // and 3 output tokens at 1 and 2 USD per token.
    let cost = gw
        .metrics_when("apiproxy_cost_usd_total", &[("provider", "up")], 5.0 * 13.0)
        .await;
    let up_cost = prom::sum(&cost, "apiproxy_cost_usd_total", &[("provider", "up")]);
    assert!((up_cost - 5.0 * 13.0).abs() < 1e-6, "{up_cost}\n{cost}");
    // A provider's own price wins over the top-level one.
    assert_eq!(
        chat("sk-client-own-00001", "priced/m")
            .await
            .unwrap()
            .status(),
        200
    );
    // Counted once its request is (the same logging phase records both).
    let m = gw
        .metrics_when("apiproxy_requests_total", &[("provider", "priced")], 1.0)
        .await;
    assert_eq!(
        prom::sum(&m, "apiproxy_cost_usd_total", &[("provider", "priced")]),
        0.0
    );
    assert!(priced.count() >= 1);
}

/// AI-Higress's expiring keys: `expires_at` on configured and console keys;
/// an expired key gets 401 saying so, a bad time is refused by `-t` and by
/// the admin API.
#[tokio::test]
async fn expired_keys_get_401_saying_they_expired() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "hi"))).await;
    let gw = Gateway::start(&format!(
        r#"auth:
  keys:
    - {{ name: old, key: sk-client-old-00001, expires_at: "2020-01-01T00:00:00Z" }}
    - {{ name: live, key: sk-client-live-0001, expires_at: "2999-01-01T00:00:00+02:00" }}
  admin_keys: [{ADMIN}]
providers:
  - {{ id: up, kind: openai, base_url: "{}", api_keys: [sk-up], models: [m] }}
"#,
        up.base_url()
    ))
    .await;
    let chat = |key: String| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth(key)
            .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    let r = chat("sk-client-old-00001".into()).await.unwrap();
    assert_eq!(r.status(), 401);
    let body = r.text().await.unwrap();
    assert!(body.contains("expired at 2020-01-01T00:00:00Z"), "{body}");
    assert_eq!(
        chat("sk-client-live-0001".into()).await.unwrap().status(),
        200
    );

    // A console key: made with an expiry ahead, it works; moved into the
    // past, it is refused.
    let admin = |req: reqwest::RequestBuilder| req.bearer_auth(ADMIN).send();
    let made = admin(
        client()
            .post(format!("{}/admin/keys", gw.url()))
            .json(&json!({
                "name": "temp", "expires_at": "2999-06-01T12:00:00Z"
            })),
    )
    .await
    .unwrap();
    assert_eq!(made.status(), 201);
    let made: serde_json::Value = made.json().await.unwrap();
    assert_eq!(made["expires_at"], "2999-06-01T12:00:00Z");
    let key = made["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(key.clone()).await.unwrap().status(), 200);
    let moved = admin(
        client()
            .patch(format!("{}/admin/keys/temp", gw.url()))
            .json(&json!({"expires_at": "2021-03-04T05:06:07Z"})),
    )
    .await
    .unwrap();
    assert_eq!(moved.status(), 200, "{}", moved.text().await.unwrap());
    let r = chat(key).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("expired at 2021-03-04T05:06:07Z"));
    let bad = admin(
        client()
            .post(format!("{}/admin/keys", gw.url()))
            .json(&json!({
                "name": "bad", "expires_at": "next tuesday"
            })),
    )
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
    let listed: serde_json::Value = admin(client().get(format!("{}/admin/keys", gw.url())))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let old = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "old")
        .unwrap();
    assert_eq!(old["expires_at"], "2020-01-01T00:00:00Z");

    let (ok, out) = check_config_text(
        "auth:\n  keys:\n    - { name: a, key: sk-a-000000000001, expires_at: soon }\n",
    );
    assert!(
        !ok && out.contains("auth.keys[0].expires_at: \"soon\" is not an RFC 3339 time"),
        "{out}"
    );
}

/// ai-proxy's config watching: `server.watch_config: true` reloads when the
/// config file or a filter file changes; a bad file is refused and logged
/// as a bad SIGHUP reload is, and the running config stays.
#[tokio::test]
async fn watch_config_reloads_changed_files_and_refuses_bad_ones() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "hi"))).await;
    let providers = format!(
        "providers:\n  - {{ id: up, kind: openai, base_url: \"{}\", api_keys: [sk-up], models: [m] }}\n",
        up.base_url()
    );
    let gw = Gateway::start_with_server("watch_config: true", &providers).await;
    let chat = |model: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    assert_eq!(chat("fast").await.unwrap().status(), 404);
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let with_model =
        format!("{text}models:\n  - {{ name: fast, upstreams: [{{ provider: up, model: m }}] }}\n");
    std::fs::write(&gw.config_path, &with_model).unwrap();
    gw.expect_log("config reloaded from").await;
    assert_eq!(
        chat("fast").await.unwrap().status(),
        200,
        "the edit was taken without SIGHUP"
    );

    // A broken file is refused, and the running config serves on.
    std::fs::write(&gw.config_path, format!("{with_model}providers: [oops\n")).unwrap();
    gw.expect_log("config reload rejected").await;
    assert_eq!(chat("fast").await.unwrap().status(), 200);

    // A filter file appearing beside it is a change too.
    std::fs::write(&gw.config_path, &with_model).unwrap();
    let filters = gw.dir().join("filters");
    std::fs::create_dir_all(&filters).unwrap();
    std::fs::write(
        filters.join("headers.yaml"),
        "headers:\n  - set: { x-team: blue }\n",
    )
    .unwrap();
    let taken = eventually(WAIT, || async {
        chat("fast").await.unwrap();
        up.last().header("x-team") == Some("blue")
    })
    .await;
    assert!(
        taken,
        "the new filter file was never applied:\n{}",
        gw.log()
    );
}

/// ai-proxy's per-provider model options: `{name, alias}` models,
/// `model_prefix`, `excluded_models` and `disabled`.
#[tokio::test]
async fn aliases_prefixes_exclusions_and_disabled_providers() {
    let a = MockProvider::always(Reply::json(200, openai_completion("x", "from a"))).await;
    let b = MockProvider::always(Reply::json(200, openai_completion("x", "from b"))).await;
    let gw = Gateway::start(&format!(
        r#"providers:
  - id: a
    kind: openai
    base_url: "{}"
    api_keys: [sk-a]
    models: [{{ name: gpt-real, alias: fast }}, plain-1, secret-x]
    excluded_models: ["secret-*"]
    model_prefix: "oa-"
  - {{ id: b, kind: openai, base_url: "{}", api_keys: [sk-b], models: [only-b], disabled: true }}
"#,
        a.base_url(),
        b.base_url()
    ))
    .await;
    let chat = |model: &'static str| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    for (asked, sent) in [
        ("fast", "gpt-real"),
        ("oa-fast", "gpt-real"),
        ("a/fast", "gpt-real"),
        ("oa-plain-1", "plain-1"),
    ] {
        let r = chat(asked).await.unwrap();
        assert_eq!(r.status(), 200, "{asked}: {}", r.text().await.unwrap());
        assert_eq!(a.last().json()["model"], sent, "{asked}");
    }
    let before = a.count();
    for excluded in ["secret-x", "a/secret-x", "oa-secret-x"] {
        assert_eq!(chat(excluded).await.unwrap().status(), 404, "{excluded}");
    }
    assert_eq!(
        a.count(),
        before,
        "an excluded model never reaches the provider"
    );
    assert_eq!(chat("only-b").await.unwrap().status(), 404);
    assert_ne!(chat("b/only-b").await.unwrap().status(), 200);
    assert_eq!(b.count(), 0, "a disabled provider gets nothing");

    let listed: serde_json::Value = client()
        .get(format!("{}/v1/models", gw.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    for shown in ["oa-fast", "oa-plain-1", "fast", "plain-1"] {
        assert!(ids.contains(&shown), "{shown} missing from {ids:?}");
    }
    for hidden in [
        "secret-x",
        "oa-secret-x",
        "a/fast",
        "only-b",
        "b/only-b",
        "gpt-real",
    ] {
        assert!(!ids.contains(&hidden), "{hidden} listed: {ids:?}");
    }

    let (ok, out) = check_config_text(
        "providers:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", models: [{ name: a, alias: \"\" }], excluded_models: [\"[\"], model_prefix: \" \" }\n",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("providers[0].models[0]: must not be empty"),
        "{out}"
    );
    assert!(out.contains("providers[0].excluded_models[0]"), "{out}");
    assert!(out.contains("providers[0].model_prefix"), "{out}");
}

/// APIProxy's `LOG_TIMEZONE` (and `log.timezone`): the log's timestamps in
/// that zone, with its offset; an unknown zone is refused naming the variable.
#[tokio::test]
async fn log_timestamps_in_the_configured_time_zone() {
    let gw = Gateway::start(
        "log:\n  timezone: Asia/Tokyo\nproviders:\n  - { id: p, kind: openai, base_url: \"http://127.0.0.1:9\", api_keys: [k], models: [m] }\n",
    )
    .await;
    let log = gw.log_until("+09:00 INFO").await;
    assert!(!log.contains("Z INFO"), "every line in the zone:\n{log}");
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .arg("-t")
        .env("LLM_PROVIDERS", "up")
        .env("LLM_PROVIDER_up_BASE_URL", "http://127.0.0.1:9")
        .env("LOG_TIMEZONE", "Mars/Olympus_Mons")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // Named by its variable; the value is not echoed.
    assert!(
        text.contains("LOG_TIMEZONE: <$LOG_TIMEZONE> is not a time zone"),
        "{text}"
    );
    assert!(!text.contains("Olympus"), "{text}");
}

/// AI-Higress's `/providers/{id}/models` right after start: it waits for the
/// first listing (bounded by the provider's `connect_timeout_ms`, as routing
/// waits) and says `"source": "listing"` while one is still under way.
#[tokio::test]
async fn provider_models_right_after_start_wait_for_the_first_listing() {
    let lister = |delay_ms: u64| {
        MockProvider::start(move |r, _| {
            if r.is_model_listing() {
                Reply::json(200, r#"{"object":"list","data":[{"id":"listed-model"}]}"#)
                    .delay(Duration::from_millis(delay_ms))
            } else {
                Reply::json(200, openai_completion("listed-model", "hi"))
            }
        })
    };
    // The quick one lists within its connect timeout (5 s); the slow one
    // takes longer than its own (300 ms).
    let (quick, slow) = (lister(2500).await, lister(4000).await);
    let gw = Gateway::start(&format!(
        "auth:\n  open: true\n  admin_keys: [{ADMIN}]\nproviders:\n  - {{ id: quick, kind: openai, base_url: \"{}\", api_keys: [k] }}\n  - {{ id: slow, kind: openai, base_url: \"{}\", api_keys: [k], connect_timeout_ms: 300 }}\n",
        quick.base_url(),
        slow.base_url()
    ))
    .await;
    let (q, s) = tokio::join!(
        gw.get_json("/providers/quick/models", ADMIN),
        gw.get_json("/providers/slow/models", ADMIN)
    );
    assert_eq!(q["models"], json!(["listed-model"]), "waited: {q}");
    assert_eq!(q["source"], "provider", "{q}");
    assert!(q["listed_at_ms"].as_u64().is_some(), "{q}");
    assert_eq!(s["source"], "listing", "still listing: {s}");
    assert_eq!(s["models"], json!([]), "{s}");
    assert!(s["listed_at_ms"].is_null(), "{s}");
    // Once the slow listing is done, it says so.
    let (s, listed) = poll(
        WAIT,
        || gw.get_json("/providers/slow/models", ADMIN),
        |v| v["source"] == "provider",
    )
    .await;
    assert!(listed, "the slow listing finished: {s}");
    assert_eq!(s["models"], json!(["listed-model"]), "{s}");
}

/// ai-proxy's `/admin/models` (every name a client may send, with who
/// serves it) and `/admin/metrics` (requests, errors, latency, tokens and
/// cost per provider and model, the counters `/metrics` serves).
#[tokio::test]
async fn admin_models_and_metrics_answer_as_ai_proxy_documents() {
    let a = MockProvider::always(Reply::json(200, openai_completion("gpt-real", "hi"))).await;
    let b = MockProvider::always(Reply::json(500, r#"{"error":{"message":"down"}}"#)).await;
    let gw = Gateway::start(&format!(
        r#"auth:
  open: true
  admin_keys: [{ADMIN}]
providers:
  - {{ id: a, kind: openai, base_url: "{}", api_keys: [sk-a], models: [{{ name: gpt-real, alias: fast }}], model_prefix: "oa-" }}
  - {{ id: b, kind: openai, base_url: "{}", api_keys: [sk-b], models: [only-b] }}
models:
  - {{ name: smart, upstreams: [{{ provider: a, model: fast }}] }}
"#,
        a.base_url(),
        b.base_url()
    ))
    .await;
    for model in ["smart", "oa-fast", "only-b"] {
        let r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        let want = if model == "only-b" { 502 } else { 200 };
        assert_eq!(r.status(), want, "{model}");
    }

    let m = gw.get_json("/admin/models", ADMIN).await;
    let models = m["models"].as_array().expect("models");
    let find = |id: &str| models.iter().find(|x| x["id"] == id).cloned();
    let smart = find("smart").expect("the logical model");
    assert_eq!(smart["logical"], true);
    assert_eq!(
        smart["served_by"],
        json!([{"provider_id": "a", "model_id": "gpt-real"}]),
        "the alias resolved: {smart}"
    );
    let fast = find("oa-fast").expect("the prefixed name");
    assert_eq!(fast["logical"], false);
    assert_eq!(fast["owned_by"], "a");
    assert_eq!(
        fast["served_by"],
        json!([{"provider_id": "a", "model_id": "gpt-real"}])
    );
    assert!(
        find("only-b").is_some(),
        "a name only one provider has: {m}"
    );
    assert!(
        m["logical_models"].is_array(),
        "the console's part stays: {m}"
    );
    // Admin only.
    let r = client()
        .get(format!("{}/admin/metrics", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let v = gw.get_json("/admin/metrics", ADMIN).await;
    let providers = v["providers"].as_array().expect("providers");
    let p = |id: &str| {
        providers
            .iter()
            .find(|p| p["provider"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} in {v}"))
    };
    let pa = p("a");
    assert_eq!(pa["requests"], 2, "{pa}");
    assert_eq!(pa["errors"], 0, "{pa}");
    assert_eq!(pa["input_tokens"], 14, "{pa}");
    assert_eq!(pa["output_tokens"], 6, "{pa}");
    assert!(pa["cost_usd"].as_f64().is_some(), "{pa}");
    assert!(pa["latency_ms"]["p50"].as_f64().is_some(), "{pa}");
    let per_model: u64 = pa["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(per_model, 2, "{pa}");
    let pb = p("b");
    assert_eq!(pb["requests"], 1, "{pb}");
    assert_eq!(pb["errors"], 1, "{pb}");
    assert_eq!(v["totals"]["requests"], 3, "{v}");
    assert_eq!(v["totals"]["input_tokens"], 14, "{v}");
}

/// AI-Higress's inspection endpoints as it documents them, each answered
/// through the binary: `/providers/{id}` (fields, statuses as codes and
/// ranges, never a key), `/providers/{id}/metrics`, `/logical-models/{id}`,
/// `/models` and `/v1/models` with and without a key, and a generation
/// request that asks for a stream only by `Accept: text/event-stream`.
#[tokio::test]
async fn inspection_endpoints_answer_as_ai_higress_documents() {
    let up = MockProvider::start(|r, _| {
        if r.method == "POST" && r.json()["stream"] == true {
            Reply::sse(&openai_stream("m", &["streamed"]))
        } else {
            Reply::json(200, openai_completion("m", "hi"))
        }
    })
    .await;
    let gw = Gateway::start(&format!(
        r#"auth:
  keys: [{{ name: c, key: client-key-0001 }}]
  admin_keys: [{ADMIN}]
providers:
  - {{ id: a, name: "Team A", kind: openai, base_url: "{}", api_keys: [sk-secret-a, sk-secret-b], models: [m], region: eu-west, max_qps: 50, weight: 2, retryable_status: "429,500-599", models_path: /v1/models }}
models:
  - {{ name: smart, description: "the good one", upstreams: [{{ provider: a, model: m }}] }}
"#,
        up.base_url()
    ))
    .await;
    let p = gw.get_json("/providers/a", ADMIN).await;
    for (field, want) in [
        ("id", json!("a")),
        ("name", json!("Team A")),
        ("kind", json!("openai")),
        ("region", json!("eu-west")),
        ("weight", json!(2.0)),
        ("max_qps", json!(50)),
        ("retryable_status", json!([429, "500-599"])),
        ("models_path", json!("/v1/models")),
        ("api_keys", json!(2)),
    ] {
        assert_eq!(p[field], want, "{field}: {p}");
    }
    assert!(p["base_url"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    assert!(!p.to_string().contains("sk-secret"), "{p}");
    assert_eq!(
        client()
            .get(format!("{}/providers/zz", gw.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let chat = |accept: Option<&'static str>| {
        let mut r = client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth("client-key-0001")
            .json(&json!({"model": "smart", "messages": [{"role": "user", "content": "x"}]}));
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send()
    };
    let r = chat(None).await.unwrap();
    assert_eq!(r.status(), 200);
    // Only the Accept header asks for a stream: the answer is SSE.
    let r = chat(Some("text/event-stream")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let body = r.text().await.unwrap();
    assert!(
        body.contains("streamed") && body.contains("[DONE]"),
        "{body}"
    );
    assert_eq!(
        up.last().json()["stream"],
        true,
        "asked upstream as a stream"
    );

    let (m, answered) = poll(
        WAIT,
        || gw.get_json("/providers/a/metrics", ADMIN),
        |m| m["successes"].as_u64() == Some(2),
    )
    .await;
    assert!(answered, "two answers counted: {m}");
    assert_eq!(m["provider_id"], "a");
    assert_eq!(m["failures"], 0);
    assert!(m["latency_ewma_ms"].as_f64().unwrap() > 0.0, "{m}");

    let l = gw.get_json("/logical-models/smart", ADMIN).await;
    assert_eq!(l["id"], "smart");
    assert_eq!(l["description"], "the good one");
    assert_eq!(l["upstreams"][0]["provider_id"], "a");
    assert_eq!(l["upstreams"][0]["model_id"], "m");

    // The model list needs a client key when the gateway has keys.
    for path in ["/models", "/v1/models"] {
        let r = client()
            .get(format!("{}{path}", gw.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} without a key");
        let v = gw.get_json(path, "client-key-0001").await;
        let ids: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert!(
            ids.contains(&"smart") && ids.contains(&"a/m"),
            "{path}: {ids:?}"
        );
    }
}

/// The rest of APIProxy's variables: `_KIND` (Anthropic's wire format and
/// headers), `MASK_USER_AGENT` and `MASK_REFERER`, `MASK_AS_BROWSER=false`,
/// and `MODELS_CACHE_TTL` in the effective configuration.
#[tokio::test]
async fn kind_masking_and_cache_ttl_variables() {
    let claude = MockProvider::always(Reply::json(
        200,
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"from claude"}],"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":2}}"#,
    ))
    .await;
    let g = from_env(&[
        ("LLM_PROVIDERS", "cl".into()),
        ("LLM_PROVIDER_cl_BASE_URL", claude.base_url()),
        ("LLM_PROVIDER_cl_KIND", "anthropic".into()),
        ("LLM_PROVIDER_cl_API_KEY", "ak-env-1".into()),
        ("MASK_USER_AGENT", "Team-Browser/9".into()),
        ("MASK_REFERER", "https://chat.example/app".into()),
        ("MODELS_CACHE_TTL", "123".into()),
        // An admin key can make client keys: clients then need one.
        ("APIPROXY_AUTH_TOKEN", TOKEN.into()),
        ("APIPROXY_ADMIN_KEY", ADMIN.into()),
    ])
    .await;
    let r = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .bearer_auth(sent_token())
        .json(&json!({"model": "cl/claude-x", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", g.log());
    assert!(r.text().await.unwrap().contains("from claude"));
    let sent = claude.last();
    assert_eq!(sent.path, "/v1/messages", "Anthropic's path");
    assert_eq!(sent.header("x-api-key"), Some("ak-env-1"));
    assert!(sent.header("anthropic-version").is_some());
    assert_eq!(sent.header("user-agent"), Some("Team-Browser/9"));
    assert_eq!(sent.header("referer"), Some("https://chat.example/app"));
    let c: serde_json::Value = client()
        .get(format!("{}/admin/config", g.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["store"]["models_cache_ttl_seconds"], 123, "{c}");
    drop(g);

    let up = MockProvider::always(Reply::json(200, openai_completion("m", "hi"))).await;
    let g = from_env(&[
        ("LLM_PROVIDERS", "up".into()),
        ("LLM_PROVIDER_up_BASE_URL", up.base_url()),
        ("MASK_AS_BROWSER", "false".into()),
    ])
    .await;
    let r = client()
        .post(format!("{}/v1/chat/completions", g.url))
        .json(&json!({"model": "up/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", g.log());
    let ua = up
        .last()
        .header("user-agent")
        .unwrap_or_default()
        .to_owned();
    assert!(!ua.starts_with("Mozilla/5.0"), "masking off: {ua}");
}
