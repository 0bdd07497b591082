use super::*;
use crate::config::Config;
use serde_json::json;

fn no_expand(_: &mut serde_yaml::Value, _: String, _: &mut Vec<String>) {}

fn provider(kind: &str) -> ProviderConfig {
    let yaml = format!(
        "providers:\n  - {{ id: p, kind: {kind}, base_url: \"https://api.example.com\" }}\n"
    );
    Config::from_yaml(&yaml, &|_| None)
        .unwrap()
        .providers
        .remove(0)
}

fn load(text: &str) -> Result<FilterSet, Vec<String>> {
    let mut set = FilterSet::default();
    let mut problems = Vec::new();
    load_file(
        text,
        "f.yaml",
        &["p".to_owned()],
        &mut no_expand,
        &mut set,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(set)
    } else {
        Err(problems)
    }
}

#[test]
fn default_then_override_then_filter() {
    let set = load(
        r#"
payload:
  default:
    - models: ["gpt-*"]
      params: { temperature: 0.5, "metadata.team": a, top_p: 0.9 }
  override:
    - models: ["gpt-*"]
      provider: [openai]
      params: { "metadata.team": b, max_tokens: 100 }
  filter:
    - params: [top_p]
    - client: [gemini]
      params: [temperature]
"#,
    )
    .unwrap();
    let p = provider("openai");
    let t = Target {
        client: Format::OpenAiChat,
        provider: &p,
        model: "gpt-4o",
        requested: "fast",
        defaulted: &[],
    };
    let body = Bytes::from(json!({"model": "gpt-4o", "temperature": 1.0}).to_string());
    let out: Value = serde_json::from_slice(&set.apply_payload(body, &t).unwrap()).unwrap();
    assert_eq!(
        out,
        json!({"model": "gpt-4o", "temperature": 1.0, "metadata": {"team": "b"}, "max_tokens": 100})
    );
    // Another model: only the unconditional filter applies.
    let t = Target {
        model: "claude-x",
        requested: "claude-x",
        ..t
    };
    let body = Bytes::from(json!({"top_p": 1, "temperature": 1}).to_string());
    let out: Value = serde_json::from_slice(&set.apply_payload(body, &t).unwrap()).unwrap();
    assert_eq!(out, json!({"temperature": 1}));
}

#[test]
fn headers_and_masking() {
    let set = load(
        r#"
headers:
  - providers: [p]
    models: ["*"]
    remove: [anthropic-beta]
    set: { x-team: blue }
    add: { x-tag: one }
mask:
  - providers: [p]
"#,
    )
    .unwrap();
    let p = provider("anthropic");
    let t = Target {
        client: Format::Anthropic,
        provider: &p,
        model: "m",
        requested: "m",
        defaulted: &[],
    };
    let edits = set.header_edits(&t).unwrap();
    let mut h = pingora::http::RequestHeader::build("POST", b"/v1/messages", None).unwrap();
    h.insert_header("anthropic-beta", "x").unwrap();
    h.insert_header("user-agent", "apiproxy/0").unwrap();
    edits.apply(&mut h).unwrap();
    let get = |n: &str| h.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(get("anthropic-beta"), None);
    assert_eq!(get("x-team").as_deref(), Some("blue"));
    assert_eq!(get("x-tag").as_deref(), Some("one"));
    assert_eq!(get("user-agent").as_deref(), Some(BROWSER_USER_AGENT));
    assert_eq!(get("origin").as_deref(), Some("https://api.example.com"));
    assert_eq!(get("referer").as_deref(), Some("https://api.example.com/"));
}

#[test]
fn problems_name_the_file_and_key_path() {
    let problems = load(
        r#"
payload:
  override:
    - models: ["["]
      client: [klingon]
      params: { "a..b": 1 }
headers:
  - providers: [nobody]
    set: { host: evil }
"#,
    )
    .unwrap_err();
    let all = problems.join("\n");
    for needle in [
        "f.yaml: payload.override[0].models[0]",
        "f.yaml: payload.override[0].client[0]",
        "f.yaml: payload.override[0].params.a..b",
        "f.yaml: headers[0].providers[0]: unknown provider \"nobody\"",
        "f.yaml: headers[0].set.host",
    ] {
        assert!(all.contains(needle), "{needle} not in:\n{all}");
    }
    let unknown = load("payload:\n  defaults: []\n").unwrap_err();
    assert!(unknown[0].starts_with("f.yaml: payload"), "{unknown:?}");
}
