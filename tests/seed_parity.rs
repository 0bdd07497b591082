//! Coming from APIProxy: its environment configuration as its README
//! documents it, through the real binary (README "Coming from APIProxy /
//! AI-Higress / ai-proxy").

mod common;

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
    assert_eq!(p["retryable_status"], json!([429, "500-599"]));
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
