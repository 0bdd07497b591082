//! Config, logs and deployment, through the real binary: made-up model
//! names stay out of metric labels and long ones get 400, access-log fields
//! are escaped and capped (text and JSON), a `?key=` never reaches a log
//! line, `-t` reports every problem without echoing environment values,
//! the APIProxy environment mode, the schema agrees with `-t` and the
//! shipped files, the compose file and container config, and every metric
//! the dashboard queries is exported.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

async fn gateway(extra: &str) -> (MockProvider, Gateway) {
    let up = MockProvider::start(|rec, _| {
        let model = rec.json()["model"].as_str().unwrap_or("m").to_owned();
        Reply::json(200, openai_completion(&model, "ok"))
    })
    .await;
    let gw = Gateway::start(&format!(
        "{extra}providers:\n  - {{ id: p, kind: openai, base_url: \"{}\", models: [known] }}\nmodels:\n  - {{ name: fast, upstreams: [{{ provider: p, model: known }}] }}\n",
        up.base_url()
    ))
    .await;
    (up, gw)
}

async fn chat(gw: &Gateway, model: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
}

/// The log once the access line showing `needle` is in it (access lines
/// are flushed every 200 ms, in order: the lines before it are in too);
/// fails the test when it never comes.
async fn settled_log(gw: &Gateway, needle: &str) -> String {
    let (log, seen) = poll(
        WAIT,
        || async { gw.log() },
        |log| {
            log.lines()
                .any(|l| l.contains(" access] ") && l.contains(needle))
        },
    )
    .await;
    assert!(seen, "no access line with {needle:?}:\n{log}");
    log
}

#[tokio::test]
async fn made_up_model_names_become_other_and_long_ones_get_400() {
    let (up, gw) = gateway("").await;
    for m in ["fast", "known", "p/known", "p/invented-1", "p/invented-2"] {
        assert_eq!(chat(&gw, m).await.status(), 200, "{m}");
    }
    let metrics = gw.metrics_when("apiproxy_requests_total", &[], 5.0).await;
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("apiproxy_requests_total{"))
        .collect();
    assert!(!metrics.contains("invented"), "{metrics}");
    for label in [
        "model=\"fast\"",
        "model=\"known\"",
        "model=\"p/known\"",
        "model=\"other\"",
        "upstream_model=\"other\"",
    ] {
        assert!(
            requests.iter().any(|l| l.contains(label)),
            "{label} missing in {requests:#?}"
        );
    }
    let other = requests
        .iter()
        .find(|l| l.contains("model=\"other\""))
        .unwrap();
    assert!(other.ends_with(" 2"), "{other}");

    // Longer than server.max_model_name_bytes (default 256): 400, never upstream.
    let before = up.count();
    let r = chat(&gw, &format!("p/{}", "x".repeat(300))).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 256"));
    let r = chat(&gw, "p/a\nb").await;
    assert_eq!(r.status(), 400);
    assert_eq!(up.count(), before);
}

#[tokio::test]
async fn the_model_name_bound_is_configurable() {
    let up = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start_with_server(
        "max_model_name_bytes: 16",
        &format!(
            "providers:\n  - {{ id: p, kind: openai, base_url: \"{}\" }}\n",
            up.base_url()
        ),
    )
    .await;
    assert_eq!(chat(&gw, "p/0123456789abcd").await.status(), 200);
    assert_eq!(chat(&gw, "p/0123456789abcde").await.status(), 400);

    let dir = TempDir::new();
    let conf = dir.0.join("c.yaml");
    std::fs::write(&conf, "server:\n  max_model_name_bytes: 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.max_model_name_bytes"));
}

#[tokio::test]
async fn access_log_fields_are_escaped_and_capped() {
    let (_up, gw) = gateway("").await;
    // A name that tries to forge a field, and one far longer than a field may be.
    assert_eq!(chat(&gw, "p/x key=root").await.status(), 200);
    let long = format!("p/{}", "z".repeat(250));
    assert_eq!(chat(&gw, &long).await.status(), 200);
    let log = settled_log(&gw, &format!("{}...", &"z".repeat(198))).await;
    assert!(log.contains("model=p/x\\x20key=root"), "{log}");
    assert!(!log.contains(" key=root"), "{log}");
    assert!(
        !log.contains(&"z".repeat(201)),
        "a field was not capped:\n{log}"
    );
    assert!(log.contains(&format!("{}...", &"z".repeat(198))), "{log}");
}

#[tokio::test]
async fn json_access_lines_carry_the_request_story() {
    let (_up, gw) = gateway("log:\n  access_format: json\n").await;
    let r = client()
        .post(format!("{}/v1/messages", gw.url()))
        .json(&json!({"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (log, seen) = poll(
        WAIT,
        || async { gw.log() },
        |log| {
            log.lines()
                .any(|l| l.starts_with('{') && l.contains("/v1/messages"))
        },
    )
    .await;
    assert!(seen, "no JSON access line:\n{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with('{') && l.contains("/v1/messages"))
        .expect("the JSON access line");
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["format"], "anthropic");
    assert_eq!(v["model"], "fast");
    assert_eq!(v["provider"], "p");
    assert_eq!(v["upstream_model"], "known");
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["status"], 200);
    assert_eq!(
        (v["input_tokens"].clone(), v["output_tokens"].clone()),
        (json!(7), json!(3))
    );
    for f in [
        "ts",
        "total_ms",
        "ttft_ms",
        "overhead_ms",
        "key",
        "cost_usd",
    ] {
        assert!(v.get(f).is_some(), "{f} missing: {v}");
    }
    assert!(v["total_ms"].as_f64().unwrap() >= v["overhead_ms"].as_f64().unwrap());
}

#[tokio::test]
async fn a_key_sent_as_query_never_reaches_a_log_line() {
    let up = MockProvider::always(Reply::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1}})
        .to_string(),
    ))
    .await;
    let gw = Gateway::start(&format!(
        "log:\n  level: debug\nauth:\n  keys:\n    - {{ name: g, key: QSECRET-good-123456 }}\nproviders:\n  - {{ id: gem, kind: gemini, base_url: \"{}\" }}\n",
        up.base_url()
    ))
    .await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let url = |key: &str| format!("{}/v1beta/models/gem/m:generateContent?key={key}", gw.url());
    let r = client()
        .post(url("QSECRET-good-123456"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .post(url("QSECRET-wrong-999999"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .get(format!("{}/nowhere?key=QSECRET-good-123456", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A client that promises a body and resets the connection: the answer
    // cannot be written, and Pingora logs the failed request with its summary.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
        .await
        .unwrap();
    #[allow(deprecated)] // a zero linger is the point: the close is a reset
    s.set_linger(Some(Duration::ZERO)).unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"POST /v1beta/models/gem/m:generateContent?key=QSECRET-good-123456 HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"contents\"",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);

    // Every line that could carry the key is written before the checks:
    // Pingora's error line for the reset request, and the access line of
    // the last answered one.
    gw.expect_log("Fail to filter request").await;
    let log = settled_log(&gw, "GET /nowhere").await;
    // Pingora's own error line is there, with the summary that leaves the query out.
    assert!(
        log.contains("POST /v1beta/models/gem/m:generateContent, Host: x"),
        "{log}"
    );
    assert!(
        !log.contains("QSECRET"),
        "a client key reached the log:\n{log}"
    );
}

#[tokio::test]
async fn t_reports_every_problem_and_no_environment_value() {
    let dir = TempDir::new();
    let conf = dir.0.join("c.yaml");
    std::fs::write(
        &conf,
        r#"auth:
  keys:
    - { name: a, key: "${UNSET_KEY_A}" }
    - { name: b, key: "${UNSET_KEY_B}${ALSO_UNSET}" }
providers:
  - { id: x, kind: nonsense, base_url: "http://127.0.0.1:1" }
  - { id: y, kind: openai, base_url: "${SECRET_URL}" }
"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&conf)
        .env("SECRET_URL", "sk-live-not-a-url-424242")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for needle in [
        "auth.keys[0].key: environment variable UNSET_KEY_A is not set",
        "auth.keys[1].key: environment variable UNSET_KEY_B is not set",
        "auth.keys[1].key: environment variable ALSO_UNSET is not set",
        "providers[0].kind",
        "providers[1].base_url",
    ] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }
    assert!(
        !stderr.contains("sk-live"),
        "an environment value was echoed:\n{stderr}"
    );
    assert!(stderr.contains("<$SECRET_URL>"), "{stderr}");
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The port of an `ADDRESS:PORT` listen value.
fn port_of(listen: &str) -> String {
    listen.rsplit(':').next().unwrap().to_owned()
}

#[test]
fn compose_file_wires_the_image_config_and_ports() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/compose.yaml")).unwrap();
    let app = &compose["services"]["apiproxy"];
    // The image is built from the repository's Dockerfile.
    let context = root
        .join("deploy")
        .join(app["build"]["context"].as_str().unwrap());
    let dockerfile = app["build"]["dockerfile"].as_str().unwrap();
    assert!(
        context.join(dockerfile).is_file(),
        "{}",
        context.join(dockerfile).display()
    );
    assert_eq!(
        context.canonicalize().unwrap(),
        root.canonicalize().unwrap()
    );
    // The config mounted is the one the image ships and runs with.
    let docker = repo_file("Dockerfile");
    let volume = app["volumes"][0].as_str().unwrap();
    let (source, target) = volume.split_once(':').unwrap();
    let target = target.trim_end_matches(":ro");
    assert!(root.join("deploy").join(source).is_file(), "{source}");
    assert!(
        docker.contains(&format!("COPY deploy/apiproxy.yaml {target}")),
        "{docker}"
    );
    assert!(
        docker.contains(&format!("\"-c\", \"{target}\"")),
        "{docker}"
    );
    // Ports: the config's listeners, published by compose, exposed by the image.
    let conf: serde_yaml::Value = serde_yaml::from_str(&repo_file("deploy/apiproxy.yaml")).unwrap();
    let listen = conf["server"]["listen"].as_str().unwrap();
    let metrics = conf["server"]["metrics_listen"].as_str().unwrap();
    assert!(listen.starts_with("0.0.0.0:") && metrics.starts_with("0.0.0.0:"));
    let published: Vec<String> = app["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| port_of(p.as_str().unwrap()))
        .collect();
    for port in [port_of(listen), port_of(metrics)] {
        assert!(
            published.contains(&port),
            "{port} not published: {published:?}"
        );
        assert!(docker.contains(&format!("EXPOSE {} {}", port_of(listen), port_of(metrics))));
    }
    // Redis: a service, named by the REDIS_URL the config reads.
    assert!(compose["services"]["redis"]["image"]
        .as_str()
        .unwrap()
        .starts_with("redis"));
    assert_eq!(
        app["environment"]["REDIS_URL"],
        "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@redis:6379/0"
    );
    // Redis persists (append-only file on a volume) and requires the
    // password the gateway's URL carries, from the environment.
    let redis = &compose["services"]["redis"];
    let command: Vec<&str> = redis["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let command = command.join(" ");
    assert!(command.contains("--appendonly yes"), "{command}");
    assert!(
        command.contains("--requirepass \"$$REDIS_PASSWORD\""),
        "{command}"
    );
    assert_eq!(
        redis["environment"]["REDIS_PASSWORD"],
        "${REDIS_PASSWORD:?set REDIS_PASSWORD}"
    );
    assert_eq!(redis["volumes"][0], "redis-data:/data");
    assert!(compose["volumes"]["redis-data"].is_mapping());
    assert!(conf["store"]["redis_url"]
        .as_str()
        .unwrap()
        .contains("${REDIS_URL"));
    // Same bootstrap as `make run`; pid file and upgrade socket in the
    // directory the image makes for the gateway's user.
    assert!(docker.contains("scripts/bootstrap.sh"));
    assert!(docker.contains("install -d -o apiproxy -g apiproxy -m 0700 /run/apiproxy"));
    for k in ["pid_file", "upgrade_sock"] {
        assert!(
            conf["server"][k]
                .as_str()
                .unwrap()
                .starts_with("/run/apiproxy/"),
            "{k}"
        );
    }
}

#[test]
fn the_container_config_requires_a_client_key() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/apiproxy.yaml");
    let run = |env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_apiproxy"));
        c.args(["-t", "-c"])
            .arg(&conf)
            .env_remove("APIPROXY_CLIENT_KEY");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("environment variable APIPROXY_CLIENT_KEY is not set"),
        "{stderr}"
    );
    let out = run(&[("APIPROXY_CLIENT_KEY", "a-long-client-key")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let redis = apiproxy_store::testing::RedisServer::start();
    let bad = MockProvider::always(Reply::json(503, r#"{"error":{"message":"busy"}}"#)).await;
    let good = MockProvider::always(Reply::sse(&openai_stream("gpt-4o", &["ok"]))).await;
    let gw = Gateway::start(&format!(
        "store:\n  redis_url: \"{}\"\nauth:\n  keys:\n    - {{ name: k, key: dash-key-123, rpm: 2 }}\nproviders:\n  - {{ id: bad, kind: openai, base_url: \"{}\", models: [m] }}\n  - {{ id: good, kind: openai, base_url: \"{}\", models: [gpt-4o] }}\n",
        redis.url,
        bad.base_url(),
        good.base_url()
    ))
    .await;
    let ask = || {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .bearer_auth("dash-key-123")
            .json(
                &json!({"model": "bad/m", "models": ["good/gpt-4o"], "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}),
            )
            .send()
    };
    // A failover to a priced model (streamed), a second one, then the rpm refusal.
    assert_eq!(ask().await.unwrap().status(), 200);
    assert_eq!(ask().await.unwrap().status(), 200);
    assert_eq!(ask().await.unwrap().status(), 429);
    let metrics = gw.metrics_until("apiproxy_rate_limited_total{").await;

    let dashboard: Value =
        serde_json::from_str(&repo_file("deploy/grafana/apiproxy.json")).unwrap();
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(i) = rest.find("apiproxy_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                queried.push(name);
            }
        }
    }
    queried.sort();
    queried.dedup();
    assert!(queried.len() >= 12, "{queried:?}");
    for name in &queried {
        let present = metrics
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")));
        assert!(
            present,
            "{name} is queried by the dashboard but not on /metrics:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn apiproxy_environment_configuration_runs_without_a_file() {
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
    let port = free_port();
    let dir = TempDir::new();
    let log = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .current_dir(&dir.0)
        .env("LLM_PROVIDERS", "up")
        .env("LLM_PROVIDER_up_NAME", "Upstream")
        .env("LLM_PROVIDER_up_BASE_URL", up.base_url())
        .env("LLM_PROVIDER_up_API_KEY", "pk-env-1")
        .env("LLM_PROVIDER_up_MODELS_PATH", "/custom/models")
        .env("LLM_PROVIDER_up_WEIGHT", "2")
        .env("LLM_PROVIDER_up_RETRYABLE_STATUS_CODES", "429,500-599")
        .env("LOG_LEVEL", "INFO")
        .env("APIPROXY_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while client().get(format!("{url}/health")).send().await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(dir.0.join("stderr.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The APIProxy seed's `input` list, in both shapes, on the chat endpoint.
    let r = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "up/m", "input": [
            {"role": "user", "parts": [{"text": "first"}]},
            {"role": "model", "content": "answer"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]}
        ]}))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    // The catalog is listed in the background, from MODELS_PATH.
    let listed = |up: &MockProvider| {
        up.requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/custom/models")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !listed(&up) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("from env"));
    let reqs = up.requests.lock().unwrap().clone();
    let post = reqs
        .iter()
        .find(|r| r.method == "POST")
        .expect("a generation request");
    assert_eq!(post.header("authorization"), Some("Bearer pk-env-1"));
    let sent = post.json();
    assert_eq!(sent["messages"][0]["content"][0]["text"], "first");
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": "answer"})
    );
    assert_eq!(sent["messages"][2]["content"][0]["text"], "second");
    assert!(sent.get("input").is_none(), "{sent}");
    assert!(
        reqs.iter()
            .any(|r| r.method == "GET" && r.path == "/custom/models"),
        "{reqs:?}"
    );
}

#[test]
fn environment_problems_name_variables_and_c_wins() {
    let dir = TempDir::new();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_apiproxy"))
            .current_dir(&dir.0)
            .args(args)
            .env("LLM_PROVIDERS", "x,y")
            .env("LLM_PROVIDER_x_BASE_URL", "ftp://secret-host-99")
            .env("LLM_PROVIDER_y_BASE_URL", "http://127.0.0.1:1")
            .env("LLM_PROVIDER_y_WEIGHT", "heavy")
            .output()
            .unwrap()
    };
    let out = run(&["-t"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("LLM_PROVIDER_x_BASE_URL: "), "{stderr}");
    assert!(
        stderr.contains("LLM_PROVIDER_y_WEIGHT: not a number"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret-host-99"), "{stderr}");
    // A file given with -c wins over the environment.
    let conf = dir.0.join("c.yaml");
    std::fs::write(&conf, "providers: []\n").unwrap();
    let out = run(&["-t", "-c", conf.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `apiproxy schema [config|filters]`: the JSON Schema it prints.
fn printed_schema(of: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["schema", of])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every problem the schema finds in a YAML document, with its path.
fn schema_problems(schema: &Value, yaml: &str) -> Vec<String> {
    let instance: Value = serde_yaml::from_str(yaml).unwrap();
    let validator = jsonschema::validator_for(schema).expect("a valid JSON Schema");
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn schema_validates_the_shipped_files_and_agrees_with_t() {
    let config = printed_schema("config");
    assert_eq!(config["title"], "apiproxy configuration");
    for file in ["conf/apiproxy.yaml", "deploy/apiproxy.yaml"] {
        let problems = schema_problems(&config, &repo_file(file));
        assert!(problems.is_empty(), "{file}: {problems:?}");
    }
    let filters = printed_schema("filters");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("filters");
    let mut examples = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // A file of comments only is no rules (as the loader reads it).
        if !text_is_only_comments(&text) {
            let problems = schema_problems(&filters, &text);
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        }
        // The commented examples, switched on, are valid rules too.
        let (uncommented, blocks) = uncomment_examples(&text);
        let problems = schema_problems(&filters, &uncommented);
        assert!(
            problems.is_empty(),
            "{} examples: {problems:?}\n{uncommented}",
            path.display()
        );
        examples += blocks;
    }
    assert!(
        examples >= 3,
        "the shipped examples were checked ({examples} blocks)"
    );

    // What `-t` refuses for its shape, the schema refuses too: an unknown
    // key, a wrong type, a missing required key.
    let dir = TempDir::new();
    let broken = [
        ("server:\n  listn: 127.0.0.1:8080\n", "/server"),
        (
            "providers:\n  - { id: a, kind: openai, base_url: \"http://127.0.0.1:9\", weight: heavy }\n",
            "/providers/0/weight",
        ),
        ("models:\n  - { name: m }\n", "/models/0"),
    ];
    for (yaml, path) in broken {
        let problems = schema_problems(&config, yaml);
        assert!(
            problems.iter().any(|p| p.starts_with(path)),
            "the schema misses {path} in {yaml:?}: {problems:?}"
        );
        let file = dir.0.join("broken.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
            .arg("-t")
            .arg("-c")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "-t accepted {yaml:?}");
    }
    let problems = schema_problems(
        &filters,
        "payload:\n  default:\n    - { models: [\"*\"], parms: {} }\n",
    );
    assert!(
        !problems.is_empty(),
        "a misspelt filter key passes the schema"
    );
}

fn text_is_only_comments(text: &str) -> bool {
    text.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
}

/// Switches on the commented examples of a shipped file: each run of
/// comment lines whose first line is a YAML key alone (`# headers:`,
/// `  # default:`) loses its `# `. Returns the text and the blocks switched.
fn uncomment_examples(text: &str) -> (String, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut blocks = 0;
    let mut i = 0;
    let body = |l: &str| -> Option<(usize, String)> {
        let indent = l.len() - l.trim_start().len();
        let rest = l.trim_start().strip_prefix('#')?;
        Some((indent, rest.strip_prefix(' ').unwrap_or(rest).to_owned()))
    };
    while i < lines.len() {
        let starts_example = body(lines[i]).is_some_and(|(_, b)| {
            let b = b.trim_end();
            b.ends_with(':') && !b.contains(' ') && b.len() > 1
        });
        if !starts_example {
            out.push(lines[i].to_owned());
            i += 1;
            continue;
        }
        blocks += 1;
        while let Some((indent, b)) = lines.get(i).and_then(|l| body(l)) {
            out.push(format!("{}{b}", " ".repeat(indent)));
            i += 1;
        }
    }
    (out.join("\n"), blocks)
}
