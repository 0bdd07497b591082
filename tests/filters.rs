//! filters/: payload rules, header rules and browser masking, through the
//! real binary, for each provider kind (what the mock provider received),
//! and a bad rule file named by `-t` and refused on reload.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::wire::{self, Wire};
use common::*;
use serde_json::{json, Value};

/// Four mock providers, one per kind, and the providers section naming
/// them `chat`, `responses`, `anthropic`, `gemini`.
async fn four_providers() -> (Vec<(Wire, MockProvider)>, String) {
    let mut mocks = Vec::new();
    let mut yaml = String::from("providers:\n");
    for kind in wire::ALL {
        let m = MockProvider::start(move |rec, _| wire::provider_reply(kind, rec)).await;
        let (k, extra) = match kind {
            // Pinned: `wire_api: auto` would first try /v1/responses.
            Wire::Chat => ("openai", ", wire_api: chat"),
            Wire::Responses => ("openai", ", wire_api: responses"),
            Wire::Anthropic => ("anthropic", ""),
            Wire::Gemini => ("gemini", ""),
        };
        // A configured model list: no background listing request lands on
        // the mock between a test's request and its `last()`.
        yaml.push_str(&format!(
            "  - {{ id: {}, kind: {k}, base_url: \"{}\", api_keys: [pk-{}], models: [m-1, m-2, plain]{extra} }}\n",
            kind.name(),
            m.base_url(),
            kind.name()
        ));
        mocks.push((kind, m));
    }
    (mocks, yaml)
}

/// Where the temperature sits in each kind's body.
fn temperature(kind: Wire, body: &Value) -> Value {
    match kind {
        Wire::Gemini => body["generationConfig"]["temperature"].clone(),
        _ => body["temperature"].clone(),
    }
}

const PAYLOAD_RULES: &str = r#"
# default: only when absent; override: always; filter: removed; in that order.
payload:
  default:
    - models: ["m-*"]
      params: { "x_default.a": 1, "x_default.b": 2 }
    - models: ["other-*"]
      params: { x_never: 1 }
    - client: [anthropic]
      params: { x_client_anthropic: 1 }
  override:
    - models: ["m-*"]
      provider: [gemini]
      params: { "generationConfig.temperature": 0.25 }
    - models: ["m-*"]
      provider: [openai, responses, anthropic]
      params: { temperature: 0.25 }
  filter:
    - models: ["m-*"]
      params: [x_default.b]
"#;

async fn ask(gw: &Gateway, model: &str) -> reqwest::Response {
    client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .json(&json!({
            "model": model,
            "temperature": 0.9,
            "messages": [{"role": "user", "content": "hi"}]
        }))
        .send()
        .await
        .expect("request")
}

fn write_rules(dir: &TempDir, name: &str, text: &str) {
    std::fs::write(dir.0.join(name), text).expect("write rule file");
}

#[tokio::test]
async fn payload_rules_change_what_each_provider_kind_receives() {
    let (mocks, providers) = four_providers().await;
    let rules = TempDir::new();
    write_rules(&rules, "payload.yaml", PAYLOAD_RULES);
    let gw = Gateway::start(&format!("filters_dir: {}\n{providers}", rules.0.display())).await;
    for (kind, mock) in &mocks {
        let r = ask(&gw, &format!("{}/m-1", kind.name())).await;
        assert_eq!(r.status(), 200, "{kind:?}: {}", r.text().await.unwrap());
        let got = mock.last().json();
        assert_eq!(
            temperature(*kind, &got),
            json!(0.25),
            "{kind:?} override: {got}"
        );
        assert_eq!(
            got["x_default"],
            json!({"a": 1}),
            "{kind:?} default+filter: {got}"
        );
        assert!(got.get("x_never").is_none(), "{kind:?}: {got}");
        assert!(got.get("x_client_anthropic").is_none(), "{kind:?}: {got}");
    }
    // A model no rule names: the body goes out as translated.
    let (_, chat) = &mocks[0];
    assert_eq!(ask(&gw, "chat/plain").await.status(), 200);
    let got = chat.last().json();
    assert_eq!(got["temperature"], json!(0.9), "{got}");
    assert!(got.get("x_default").is_none(), "{got}");
}

/// `client:` picks rules by the format the client spoke: each of the four
/// client formats gets its own rule's field upstream and none of the
/// others', whatever the provider kind (a same-format and a translated one).
#[tokio::test]
async fn client_selectors_match_each_client_format() {
    let (mocks, providers) = four_providers().await;
    let rules = TempDir::new();
    write_rules(
        &rules,
        "clients.yaml",
        r#"
payload:
  default:
    - client: [chat]
      params: { x_from: chat }
    - client: [responses]
      params: { x_from: responses }
    - client: [anthropic]
      params: { x_from: anthropic }
    - client: [gemini]
      params: { x_from: gemini }
    - client: [anthropic, gemini]
      params: { x_pair: yes }
"#,
    );
    let gw = Gateway::start(&format!("filters_dir: {}\n{providers}", rules.0.display())).await;
    for client in wire::ALL {
        for (kind, mock) in [&mocks[0], &mocks[3]] {
            let model = format!("{}/m-1", kind.name());
            let req = wire::client_request(client, &model, wire::Scenario::Text, false, "k");
            let mut r = common::client().post(format!("{}{}", gw.url(), req.path));
            for (k, v) in &req.headers {
                r = r.header(k, v);
            }
            let before = mock.count();
            let r = r.json(&req.body).send().await.expect("request");
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            assert_eq!(status, 200, "{client:?} → {kind:?}: {text}");
            assert_eq!(mock.count(), before + 1, "{client:?} → {kind:?}");
            let got = mock.last().json();
            assert_eq!(
                got["x_from"],
                json!(client.name()),
                "{client:?} → {kind:?}: {got}"
            );
            let pair = matches!(client, Wire::Anthropic | Wire::Gemini);
            assert_eq!(
                got.get("x_pair").is_some(),
                pair,
                "{client:?} → {kind:?}: {got}"
            );
        }
    }
}

#[tokio::test]
async fn default_does_not_replace_a_value_the_client_sent() {
    let (mocks, providers) = four_providers().await;
    let rules = TempDir::new();
    write_rules(
        &rules,
        "d.yaml",
        "payload:\n  default:\n    - provider: [openai]\n      params: { temperature: 0.1, top_p: 0.5 }\n",
    );
    let gw = Gateway::start(&format!("filters_dir: {}\n{providers}", rules.0.display())).await;
    assert_eq!(ask(&gw, "chat/m-1").await.status(), 200);
    let got = mocks[0].1.last().json();
    assert_eq!(
        (got["temperature"].clone(), got["top_p"].clone()),
        (json!(0.9), json!(0.5))
    );
}

/// Anthropic requires `max_tokens`, so a translated request always has one;
/// the translator's own default (4096) counts as absent for `default`
/// rules, and a value the client sent still wins.
#[tokio::test]
async fn a_default_rule_sets_what_the_translator_filled_in() {
    let (mocks, providers) = four_providers().await;
    let rules = TempDir::new();
    write_rules(
        &rules,
        "d.yaml",
        "payload:\n  default:\n    - provider: [anthropic]\n      params: { max_tokens: 777 }\n",
    );
    let gw = Gateway::start(&format!("filters_dir: {}\n{providers}", rules.0.display())).await;
    let anthropic = &mocks[2].1;
    let send = |body: Value| {
        client()
            .post(format!("{}/v1/chat/completions", gw.url()))
            .json(&body)
            .send()
    };
    let messages = json!([{"role": "user", "content": "hi"}]);
    let r = send(json!({"model": "anthropic/m-1", "messages": messages}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(anthropic.last().json()["max_tokens"], 777, "the rule's");
    let r = send(json!({"model": "anthropic/m-1", "max_tokens": 50, "messages": messages}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(anthropic.last().json()["max_tokens"], 50, "the client's");
}

#[tokio::test]
async fn header_rules_and_browser_masking_reach_each_provider_kind() {
    let (mocks, providers) = four_providers().await;
    let rules = TempDir::new();
    write_rules(
        &rules,
        "headers.yaml",
        r#"
headers:
  - set: { x-team: blue }
    add: { x-tag: one }
  - models: ["m-2"]
    set: { x-only-m2: "yes" }
  - providers: [anthropic]
    remove: [anthropic-version]
mask:
  - providers: [anthropic, gemini]
  - providers: [responses]
    user_agent: "MyBrowser/1.0"
    origin: "https://app.example"
"#,
    );
    let gw = Gateway::start(&format!("filters_dir: {}\n{providers}", rules.0.display())).await;
    for (kind, mock) in &mocks {
        let r = ask(&gw, &format!("{}/m-1", kind.name())).await;
        assert_eq!(r.status(), 200, "{kind:?}");
        let rec = mock.last();
        assert_eq!(rec.header("x-team"), Some("blue"), "{kind:?}");
        assert_eq!(rec.header("x-tag"), Some("one"), "{kind:?}");
        assert_eq!(rec.header("x-only-m2"), None, "{kind:?}");
        let ua = rec.header("user-agent").unwrap_or_default().to_owned();
        let base = mock.base_url();
        match kind {
            Wire::Chat => {
                assert!(ua.starts_with("apiproxy/"), "{ua}");
                assert_eq!(rec.header("origin"), None);
            }
            Wire::Responses => {
                assert_eq!(ua, "MyBrowser/1.0");
                assert_eq!(rec.header("origin"), Some("https://app.example"));
                assert_eq!(rec.header("referer"), Some(format!("{base}/").as_str()));
            }
            Wire::Anthropic | Wire::Gemini => {
                assert!(ua.starts_with("Mozilla/5.0"), "{kind:?}: {ua}");
                assert_eq!(rec.header("origin"), Some(base.as_str()), "{kind:?}");
                assert!(rec.header("accept-language").is_some(), "{kind:?}");
            }
        }
        // The provider key still goes out.
        let auth = ["authorization", "x-api-key", "x-goog-api-key"]
            .iter()
            .find_map(|h| rec.header(h));
        assert!(auth.is_some_and(|a| a.contains("pk-")), "{kind:?}");
        if *kind == Wire::Anthropic {
            assert_eq!(rec.header("anthropic-version"), None);
        }
    }
    assert_eq!(ask(&gw, "gemini/m-2").await.status(), 200);
    assert_eq!(mocks[3].1.last().header("x-only-m2"), Some("yes"));
}

const BAD_RULES: &str =
    "payload:\n  override:\n    - models: [\"[\"]\n      params: { temperature: 1 }\n";

#[tokio::test]
async fn a_bad_rule_file_is_named_by_t_and_refused_on_reload() {
    let (mocks, providers) = four_providers().await;
    let rules = TempDir::new();
    write_rules(&rules, "payload.yaml", PAYLOAD_RULES);

    // -t names the bad file and its key path.
    let conf = rules.0.join("check.yaml");
    std::fs::write(
        &conf,
        format!("filters_dir: {}\n{providers}", rules.0.display()),
    )
    .unwrap();
    write_rules(&rules, "zz-bad.yaml", BAD_RULES);
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("run -t");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("zz-bad.yaml: payload.override[0].models[0]"),
        "{stderr}"
    );
    std::fs::remove_file(rules.0.join("zz-bad.yaml")).unwrap();
    std::fs::remove_file(&conf).unwrap();

    // Reload: the bad file is refused and the running rules stay.
    let gw = Gateway::start(&format!("filters_dir: {}\n{providers}", rules.0.display())).await;
    write_rules(&rules, "zz-bad.yaml", BAD_RULES);
    let pid = gw.pid().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log().contains("config reload rejected") {
        assert!(
            Instant::now() < deadline,
            "no rejection logged:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        gw.log()
            .contains("zz-bad.yaml: payload.override[0].models[0]"),
        "{}",
        gw.log()
    );
    assert_eq!(ask(&gw, "chat/m-1").await.status(), 200);
    assert_eq!(mocks[0].1.last().json()["temperature"], json!(0.25));
}

#[tokio::test]
async fn the_shipped_examples_pass_t() {
    let dir = TempDir::new();
    let conf = dir.0.join("c.yaml");
    std::fs::write(
        &conf,
        format!(
            "filters_dir: {}/filters\nproviders:\n  - {{ id: openai, kind: openai, base_url: \"http://127.0.0.1:1\" }}\n  - {{ id: claude, kind: anthropic, base_url: \"http://127.0.0.1:1\" }}\n  - {{ id: gemini, kind: gemini, base_url: \"http://127.0.0.1:1\" }}\n",
            env!("CARGO_MANIFEST_DIR")
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apiproxy"))
        .args(["-t", "-c"])
        .arg(&conf)
        .output()
        .expect("run -t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
