//! `kind: vertex` end to end, through the real binary: a mock Google token
//! endpoint on loopback that verifies the service account's JWT (RS256
//! signature against the account's public key, issuer, audience, scope,
//! lifetime) before it issues short-lived tokens, and a mock Vertex AI that
//! takes only the tokens issued, on Vertex's exact paths (Gemini's
//! `:generateContent`, Claude's `:rawPredict` with `anthropic_version` in
//! the body and no `model`); every client format, streaming and not, both
//! publishers; one token fetch for many requests, a fetch again before
//! expiry; failover to another kind when no token can be had or Vertex
//! answers 429; no secret in the log or the admin API.

use crate::common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use common::wire::{self, Scenario, Wire, ALL};
use common::*;
use serde_json::{json, Value};

const CLIENT_KEY: &str = "ck-vertex-test-0001";
const ADMIN: &str = "admin-key-vertex-1";
const PROJECT: &str = "acme-prod";
const LOCATION: &str = "us-east5";
const EMAIL: &str = "apiproxy@acme-prod.iam.gserviceaccount.com";
/// The token URI written in the service account's JSON: the JWT's
/// audience (the request goes to `token_url`, the mock).
const AUDIENCE: &str = "https://oauth2.googleapis.com/token";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const TOKEN_PREFIX: &str = "ya29.vertex-test-";
const GEMINI: &str = "gemini-2.5-flash";
const CLAUDE: &str = "claude-sonnet-4@20250514";

/// The service account's key pair, made for these tests.
const KEY: &str = include_str!("fixtures/vertex_test_key.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/vertex_test_pub.pem");

/// A service account's JSON key as Google issues it.
fn key_json(private_key: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": private_key,
        "client_email": EMAIL,
        "client_id": "101234567890123456789",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": AUDIENCE,
    })
    .to_string()
}

/// The tokens the mock token endpoint issued (the mock Vertex takes
/// these only) and how many it issued.
#[derive(Clone, Default)]
struct Issued(Arc<Mutex<HashSet<String>>>);

impl Issued {
    fn has(&self, token: &str) -> bool {
        self.0.lock().unwrap().contains(token)
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Google's refusal of an assertion.
fn invalid_grant(why: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": "invalid_grant", "error_description": why}).to_string(),
    )
}

/// What Google's token endpoint does with `rec`: a JWT-bearer grant whose
/// assertion is signed by the account's key and names it, the audience
/// and the scope, for at most an hour. Tokens live `lifetime_s` seconds.
fn token_reply(rec: &Recorded, issued: &Issued, lifetime_s: u64) -> Reply {
    if rec.method != "POST"
        || rec.header("content-type") != Some("application/x-www-form-urlencoded")
    {
        return Reply::json(400, r#"{"error":"invalid_request"}"#);
    }
    let body = String::from_utf8_lossy(&rec.body);
    let form: Vec<(&str, &str)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let field = |k: &str| form.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    if field("grant_type") != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Reply::json(400, r#"{"error":"unsupported_grant_type"}"#);
    }
    let Some(assertion) = field("assertion") else {
        return invalid_grant("no assertion");
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).expect("public key");
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[EMAIL]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
    let claims = match jsonwebtoken::decode::<Value>(assertion, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return invalid_grant(&format!("Invalid JWT: {e}")),
    };
    let (iat, exp) = (claims["iat"].as_u64(), claims["exp"].as_u64());
    if claims["scope"] != SCOPE {
        return invalid_grant("Invalid scope");
    }
    if !matches!((iat, exp), (Some(i), Some(e)) if e > i && e - i <= 3600) {
        return invalid_grant("Invalid JWT: token lifetime over an hour");
    }
    let mut set = issued.0.lock().unwrap();
    let token = format!("{TOKEN_PREFIX}{}", set.len() + 1);
    set.insert(token.clone());
    Reply::json(
        200,
        json!({"access_token": token, "expires_in": lifetime_s, "token_type": "Bearer"})
            .to_string(),
    )
}

/// Google's 401 for a request without a token it issued.
fn unauthenticated() -> Reply {
    Reply::json(
        401,
        json!({"error": {"code": 401, "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "status": "UNAUTHENTICATED"}}).to_string(),
    )
}

fn not_found(message: &str) -> Reply {
    Reply::json(
        404,
        json!({"error": {"code": 404, "message": message, "status": "NOT_FOUND"}}).to_string(),
    )
}

fn bad_request(message: &str) -> Reply {
    Reply::json(
        400,
        json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}})
            .to_string(),
    )
}

/// What Vertex AI would do with `rec`: route it by path, check the token,
/// then answer as Gemini or as Claude; model `busy` answers 429.
fn vertex_reply(rec: &Recorded, issued: &Issued) -> Reply {
    let token = rec
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    if rec.method == "GET" && rec.path == "/v1beta1/publishers/google/models?pageSize=1000" {
        // Model Garden's list of Google's publisher models.
        if !token.is_some_and(|t| issued.has(t)) {
            return unauthenticated();
        }
        let models = json!({"publisherModels": [
            {"name": format!("publishers/google/models/{GEMINI}"), "versionId": "001"},
            {"name": "publishers/google/models/gemini-2.5-pro", "versionId": "001"}]});
        return Reply::json(200, models.to_string());
    }
    let prefix = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/");
    let Some(rest) = rec.path.strip_prefix(&prefix) else {
        return not_found("The requested URL was not found on this server.");
    };
    let Some((publisher, rest)) = rest.split_once("/models/") else {
        return not_found("The requested URL was not found on this server.");
    };
    let Some((model, method)) = rest.split_once(':') else {
        return not_found("The requested URL was not found on this server.");
    };
    if !token.is_some_and(|t| issued.has(t)) {
        return unauthenticated();
    }
    if model == "busy" {
        return Reply::json(
            429,
            json!({"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}).to_string(),
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&rec.body) else {
        return bad_request("Invalid JSON payload received.");
    };
    match (publisher, method) {
        ("google", "generateContent" | "streamGenerateContent?alt=sse") => {
            wire::provider_reply(Wire::Gemini, rec)
        }
        ("google", "countTokens") if body.get("contents").is_some() => Reply::json(
            200,
            json!({"totalTokens": 31, "totalBillableCharacters": 96}).to_string(),
        ),
        ("anthropic", "count-tokens") => not_found("count-tokens takes :rawPredict"),
        ("anthropic", "rawPredict") if model == "count-tokens" => {
            if body["model"].as_str().is_none() {
                return bad_request("model: Field required");
            }
            Reply::json(200, json!({"input_tokens": 42}).to_string())
        }
        ("anthropic", "rawPredict" | "streamRawPredict") => {
            // Vertex's Claude: the version in the body, the model in the
            // path only, as Anthropic's Vertex SDK sends it.
            if body["anthropic_version"] != "vertex-2023-10-16" {
                return bad_request("anthropic_version: Field required");
            }
            if body.get("model").is_some() {
                return bad_request("model: Extra inputs are not permitted");
            }
            if rec.header("anthropic-version").is_some() {
                return bad_request("anthropic-version header: not for Vertex AI");
            }
            let stream = body["stream"].as_bool().unwrap_or(false);
            if stream != (method == "streamRawPredict") {
                return bad_request("stream does not match the method");
            }
            // The shared Anthropic mock reads the model from the body.
            let mut named = rec.clone();
            let mut b = body;
            b["model"] = json!(model);
            named.body = b.to_string().into_bytes();
            wire::provider_reply(Wire::Anthropic, &named)
        }
        _ => not_found("The requested URL was not found on this server."),
    }
}

/// A mock token endpoint and a mock Vertex AI sharing what was issued.
struct Google {
    issued: Issued,
    tokens: MockProvider,
    vertex: MockProvider,
}

impl Google {
    async fn start(lifetime_s: u64) -> Google {
        let issued = Issued::default();
        let i = issued.clone();
        // Google takes its time: requests arriving meanwhile find a fetch
        // under way (what one fetch for many is about).
        let tokens = MockProvider::start(move |rec, _| {
            token_reply(rec, &i, lifetime_s).delay(std::time::Duration::from_millis(200))
        })
        .await;
        let i = issued.clone();
        let vertex = MockProvider::start(move |rec, _| vertex_reply(rec, &i)).await;
        Google {
            issued,
            tokens,
            vertex,
        }
    }

    /// A vertex provider `id` on these mocks, authenticated with the
    /// service account's key file `key_file`.
    fn provider(&self, id: &str, key_file: &std::path::Path) -> String {
        vertex_provider(id, &self.vertex, &self.tokens.base_url(), key_file)
    }
}

fn vertex_provider(
    id: &str,
    vertex: &MockProvider,
    token_base: &str,
    key_file: &std::path::Path,
) -> String {
    format!(
        "  - {{ id: {id}, kind: vertex, project: {PROJECT}, location: {LOCATION}, base_url: \"{}\", credentials_file: \"{}\", token_url: \"{token_base}/token\", models: [{GEMINI}, \"{CLAUDE}\", busy] }}\n",
        vertex.base_url(),
        key_file.display()
    )
}

/// Writes the service account's key file into `dir`.
fn key_file(dir: &TempDir, private_key: &str) -> std::path::PathBuf {
    let path = dir.0.join("sa.json");
    std::fs::write(&path, key_json(private_key)).expect("write key file");
    path
}

/// Logical models `{id}.{alias}`, each served by provider `id`'s `model`.
fn logical(pairs: &[(&str, &str, &str)]) -> String {
    let mut out = String::from("models:\n");
    for (id, alias, model) in pairs {
        out += &format!(
            "  - name: {id}.{alias}\n    upstreams: [{{ provider: {id}, model: \"{model}\" }}]\n"
        );
    }
    out
}

fn config(providers: &str, models: &str) -> String {
    format!(
        "auth:\n  admin_keys: [{ADMIN}]\n  keys:\n    - {{ name: tester, key: {CLIENT_KEY} }}\nproviders:\n{providers}{models}"
    )
}

/// A fresh RSA key that is not the service account's.
fn other_key() -> String {
    let rsa = openssl::rsa::Rsa::generate(2048).expect("rsa");
    let pkey = openssl::pkey::PKey::from_rsa(rsa).expect("pkey");
    String::from_utf8(pkey.private_key_to_pem_pkcs8().expect("pem")).expect("utf-8")
}

/// The mocks' own strictness, so that a gateway getting the JWT, a path,
/// the body or the token wrong cannot pass these tests.
#[tokio::test]
async fn the_mocks_reject_what_google_rejects() {
    let g = Google::start(3600).await;
    let form = |assertion: &str| {
        client()
            .post(format!("{}/token", g.tokens.base_url()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
            ))
            .send()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |key: &str, claims: Value| {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let good =
        json!({"iss": EMAIL, "scope": SCOPE, "aud": AUDIENCE, "iat": now, "exp": now + 3600});
    let resp = form(&sign(KEY, good.clone())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let token = resp.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let bad = [
        sign(&other_key(), good.clone()),
        sign(KEY, wrong("aud", json!("https://example.com/token"))),
        sign(
            KEY,
            wrong("iss", json!("someone@else.iam.gserviceaccount.com")),
        ),
        sign(
            KEY,
            wrong("scope", json!("https://www.googleapis.com/auth/drive")),
        ),
        sign(KEY, wrong("exp", json!(now + 7200))),
        sign(KEY, wrong("exp", json!(now - 120))),
    ];
    for assertion in bad {
        let resp = form(&assertion).await.unwrap();
        assert_eq!(resp.status(), 400);
    }
    assert_eq!(g.issued.count(), 1);

    let path = |publisher: &str, model: &str, method: &str| {
        format!(
            "{}/v1/projects/{PROJECT}/locations/{LOCATION}/publishers/{publisher}/models/{model}:{method}",
            g.vertex.base_url()
        )
    };
    let post = |url: String, token: &str, body: Value| {
        client()
            .post(url)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let claude = json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}]});
    let status = |r: reqwest::Response| r.status().as_u16();
    let ok = post(
        path("google", GEMINI, "generateContent"),
        &token,
        gemini.clone(),
    );
    assert_eq!(status(ok.await.unwrap()), 200);
    let ok = post(
        path("anthropic", CLAUDE, "rawPredict"),
        &token,
        claude.clone(),
    );
    assert_eq!(status(ok.await.unwrap()), 200);
    let mut with_model = claude.clone();
    with_model["model"] = json!(CLAUDE);
    let mut unversioned = claude.clone();
    unversioned
        .as_object_mut()
        .unwrap()
        .remove("anthropic_version");
    let cases = [
        (
            path("google", GEMINI, "generateContent"),
            "ya29.forged",
            gemini.clone(),
            401,
        ),
        (
            path("anthropic", CLAUDE, "rawPredict"),
            token.as_str(),
            with_model,
            400,
        ),
        (
            path("anthropic", CLAUDE, "rawPredict"),
            token.as_str(),
            unversioned,
            400,
        ),
        (
            path("anthropic", CLAUDE, "streamRawPredict"),
            token.as_str(),
            claude.clone(),
            400,
        ),
        (
            path("google", GEMINI, "streamGenerateContent"),
            token.as_str(),
            gemini.clone(),
            404,
        ),
        (
            format!(
                "{}/v1beta/models/{GEMINI}:generateContent",
                g.vertex.base_url()
            ),
            token.as_str(),
            gemini,
            404,
        ),
    ];
    for (url, token, body, want) in cases {
        let got = status(post(url.clone(), token, body).await.unwrap());
        assert_eq!(got, want, "{url}");
    }
}

/// Every client format, streaming and not, with and without tools, reaches
/// both publishers of one vertex provider on Vertex's paths, with a token
/// the service account's JWT got. Many requests at once share one token
/// fetch.
#[tokio::test]
async fn every_client_format_reaches_both_publishers() {
    let g = Google::start(3600).await;
    let dir = TempDir::new();
    let key = key_file(&dir, KEY);
    let models = logical(&[("vx", "gemini", GEMINI), ("vx", "claude", CLAUDE)]);
    let gw = Gateway::start(&config(&g.provider("vx", &key), &models)).await;

    // Sixteen requests at once before any token: one fetch serves them.
    let burst = (0..16).map(|i| {
        let client_wire = ALL[i % ALL.len()];
        let model = if i % 2 == 0 { "vx.gemini" } else { "vx.claude" };
        let req = wire::client_request(client_wire, model, Scenario::Text, i % 3 == 0, CLIENT_KEY);
        let gw = &gw;
        async move { (client_wire, i % 3 == 0, wire::send_to(gw, &req).await) }
    });
    for (client_wire, stream, answer) in futures_util::future::join_all(burst).await {
        let a = wire::read_ok_answer(client_wire, stream, &answer);
        assert_eq!(a.text, wire::ANSWER, "{client_wire:?} {stream}");
    }
    assert_eq!(g.tokens.count(), 1, "one token fetch for the burst");

    let pre = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers");
    for (alias, publisher, upstream) in [
        ("gemini", "google", GEMINI),
        ("claude", "anthropic", CLAUDE),
    ] {
        for client_wire in ALL {
            for stream in [false, true] {
                for scenario in [Scenario::Text, Scenario::Tool] {
                    let model = format!("vx.{alias}");
                    let req =
                        wire::client_request(client_wire, &model, scenario, stream, CLIENT_KEY);
                    let a =
                        wire::read_ok_answer(client_wire, stream, &wire::send_to(&gw, &req).await);
                    let shape = scenario.shape();
                    assert_eq!(
                        a.text,
                        shape.text(),
                        "{alias} {client_wire:?} {stream} {a:?}"
                    );
                    assert_eq!(
                        a.calls.len(),
                        shape.calls().len(),
                        "{alias} {client_wire:?} {a:?}"
                    );
                    let rec = g.vertex.last();
                    let method = match (publisher, stream) {
                        ("google", false) => "generateContent",
                        ("google", true) => "streamGenerateContent?alt=sse",
                        (_, false) => "rawPredict",
                        (_, true) => "streamRawPredict",
                    };
                    assert_eq!(
                        rec.path,
                        format!("{pre}/{publisher}/models/{upstream}:{method}")
                    );
                    assert_eq!(
                        rec.header("authorization"),
                        Some(&*format!("Bearer {TOKEN_PREFIX}1"))
                    );
                    assert_eq!(rec.header("x-goog-api-key"), None);
                    assert_eq!(rec.header("x-api-key"), None);
                }
            }
        }
    }
    assert_eq!(g.tokens.count(), 1, "the token is shared by every request");
}

/// A token is fetched again before it expires: with two-second tokens the
/// first is refreshed after a second, and the next request carries the new
/// one.
#[tokio::test]
async fn a_token_is_fetched_again_before_it_expires() {
    let g = Google::start(2).await;
    let dir = TempDir::new();
    let key = key_file(&dir, KEY);
    let models = logical(&[("vx", "gemini", GEMINI)]);
    let gw = Gateway::start(&config(&g.provider("vx", &key), &models)).await;
    let req = wire::client_request(Wire::Chat, "vx.gemini", Scenario::Text, false, CLIENT_KEY);
    wire::read_ok_answer(Wire::Chat, false, &wire::send_to(&gw, &req).await);
    assert_eq!(g.tokens.count(), 1);
    assert_eq!(
        g.vertex.last().header("authorization"),
        Some(&*format!("Bearer {TOKEN_PREFIX}1"))
    );
    // Past the refresh point (half its life), still within its life: the
    // request waits for the new token (a lower bound: a slow machine only
    // makes the first one staler).
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    wire::read_ok_answer(Wire::Chat, false, &wire::send_to(&gw, &req).await);
    assert!(g.tokens.count() >= 2, "no fetch again");
    let last = g.vertex.last();
    let bearer = last.header("authorization").unwrap_or_default();
    assert_ne!(bearer, format!("Bearer {TOKEN_PREFIX}1"));
    gw.expect_log("access token fetched, valid 2 s").await;
}

/// `credentials_json` from the environment works like the file; the
/// token and the private key show nowhere: not in the log, not in
/// `/providers` or `/admin/config`.
#[tokio::test]
async fn secrets_stay_secret() {
    let g = Google::start(3600).await;
    let provider = format!(
        "  - {{ id: vx, kind: vertex, project: {PROJECT}, location: {LOCATION}, base_url: \"{}\", credentials_json: \"${{VERTEX_SA}}\", token_url: \"{}/token\", models: [{GEMINI}, \"{CLAUDE}\"] }}\n",
        g.vertex.base_url(),
        g.tokens.base_url()
    );
    let models = logical(&[("vx", "claude", CLAUDE)]);
    let sa = key_json(KEY);
    let gw = Gateway::start_with_env(&config(&provider, &models), &[("VERTEX_SA", &sa)]).await;
    for client_wire in ALL {
        let req = wire::client_request(client_wire, "vx.claude", Scenario::Text, true, CLIENT_KEY);
        let a = wire::read_ok_answer(client_wire, true, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, wire::ANSWER);
    }
    assert_eq!(g.tokens.count(), 1);
    // A line of the key's base64 stands for the key.
    let key_line = KEY.lines().nth(5).expect("a key line");
    let mut seen = gw.log();
    for path in ["/providers", "/providers/vx", "/admin/config"] {
        seen += &gw.get_json(path, ADMIN).await.to_string();
    }
    for secret in [TOKEN_PREFIX, key_line, "PRIVATE KEY"] {
        assert!(!seen.contains(secret), "{secret} shown");
    }
}

/// A token count goes to Vertex's own count endpoints: Gemini's
/// `:countTokens` (the request's fields at the top, no model), Claude's
/// `count-tokens:rawPredict` (the model in the body).
#[tokio::test]
async fn token_counts_reach_vertex() {
    let g = Google::start(3600).await;
    let dir = TempDir::new();
    let key = key_file(&dir, KEY);
    let models = logical(&[("vx", "gemini", GEMINI), ("vx", "claude", CLAUDE)]);
    let gw = Gateway::start(&config(&g.provider("vx", &key), &models)).await;
    let pre = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/publishers");
    let count = |model: &str| {
        client()
            .post(format!("{}/v1/messages/count_tokens", gw.url()))
            .header("x-api-key", CLIENT_KEY)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "How many tokens?"}]}))
            .send()
    };
    let r = count("vx.gemini").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["input_tokens"], 31);
    let rec = g.vertex.last();
    assert_eq!(
        rec.path,
        format!("{pre}/google/models/{GEMINI}:countTokens")
    );
    assert!(
        rec.json().get("generateContentRequest").is_none(),
        "{}",
        rec.json()
    );
    let r = count("vx.claude").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["input_tokens"], 42);
    let rec = g.vertex.last();
    assert_eq!(
        rec.path,
        format!("{pre}/anthropic/models/count-tokens:rawPredict")
    );
    assert_eq!(rec.json()["model"], CLAUDE);
}

/// No token, no request: with the token endpoint down, or refusing a JWT
/// signed by the wrong key, the request goes to the provider of another
/// kind behind it; a 429 from Vertex likewise. The client learns nothing
/// of it but the answer.
#[tokio::test]
async fn failover_from_vertex_to_another_kind() {
    let g = Google::start(3600).await;
    let anthropic = MockProvider::start(|rec, _| wire::provider_reply(Wire::Anthropic, rec)).await;
    let dir = TempDir::new();
    let good_key = key_file(&dir, KEY);
    let wrong_dir = TempDir::new();
    let wrong_key = key_file(&wrong_dir, &other_key());
    // A port nothing listens on: the token endpoint is down.
    let down = format!("http://127.0.0.1:{}", free_port());
    let providers = [
        vertex_provider("vdown", &g.vertex, &down, &good_key),
        vertex_provider("vwrong", &g.vertex, &g.tokens.base_url(), &wrong_key),
        g.provider("vbusy", &good_key),
        format!(
            "  - {{ id: ant, kind: anthropic, base_url: \"{}\", api_keys: [sk-ant-test-1], models: [claude-haiku-4-5] }}\n",
            anthropic.base_url()
        ),
    ]
    .concat();
    let mut models = String::from("models:\n");
    for (name, id, model) in [
        ("down", "vdown", GEMINI),
        ("wrong", "vwrong", CLAUDE),
        ("busy", "vbusy", "busy"),
    ] {
        // The order of a model's upstreams is a weighted draw: Vertex, far
        // heavier, is drawn first almost always; the loop waits for it.
        models += &format!(
            "  - name: {name}\n    upstreams: [{{ provider: {id}, model: \"{model}\", weight: 1000 }}, {{ provider: ant, model: claude-haiku-4-5, weight: 1 }}]\n"
        );
    }
    let gw = Gateway::start(&config(&providers, &models)).await;
    let tried: [(&str, &dyn Fn() -> bool); 3] = [
        ("down", &|| {
            gw.log().contains("token endpoint: connect failed")
        }),
        ("wrong", &|| g.tokens.count() > 0),
        ("busy", &|| g.vertex.count() > 0),
    ];
    let clients = [Wire::Chat, Wire::Gemini, Wire::Anthropic, Wire::Responses];
    for (name, vertex_tried) in tried {
        let mut sent = 0;
        while !vertex_tried() {
            assert!(
                sent < 50,
                "{name}: Vertex never drawn in {sent} requests: {}",
                gw.log()
            );
            let client_wire = clients[sent % clients.len()];
            let before = anthropic.count();
            let req =
                wire::client_request(client_wire, name, Scenario::Text, sent % 2 == 0, CLIENT_KEY);
            let a =
                wire::read_ok_answer(client_wire, sent % 2 == 0, &wire::send_to(&gw, &req).await);
            assert_eq!(a.text, wire::ANSWER, "{name} {client_wire:?}");
            assert_eq!(
                anthropic.count(),
                before + 1,
                "{name}: answered behind Vertex"
            );
            sent += 1;
        }
    }
    // The wrong key's JWTs were refused; the good key's busy model was
    // reached with a token.
    assert_eq!(g.issued.count(), 1);
    assert!(g
        .vertex
        .requests
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.path.contains("/models/busy:")));
    let log = gw.log();
    assert!(
        log.contains("no access token: token endpoint answered 400 (invalid_grant)"),
        "{log}"
    );
    assert!(
        log.contains("no access token: token endpoint: connect failed"),
        "{log}"
    );
    assert!(!log.contains(TOKEN_PREFIX) && !log.contains("PRIVATE KEY"));
}

/// `-t` names what a vertex provider lacks, and the vertex keys on
/// another kind.
#[test]
fn config_problems_are_named() {
    let (ok, out) = check_config_text(
        "providers:\n  - { id: vx, kind: vertex, location: us-east5, api_keys: [k] }\n  - { id: g, kind: gemini, base_url: \"https://generativelanguage.googleapis.com\", project: p, token_url: \"http://127.0.0.1:1/t\" }\n",
    );
    assert!(!ok, "{out}");
    for needle in [
        "providers[0].project: kind vertex needs it",
        "providers[0].models: kind vertex needs its models listed",
        "providers[0].api_keys: kind vertex authenticates with",
        "providers[0]: kind vertex needs credentials_file, credentials_json or access_token",
        "providers[1].project: only for kind vertex",
        "providers[1].token_url: only for kind vertex",
    ] {
        assert!(out.contains(needle), "{needle} not in {out}");
    }
}

/// A static `access_token` is sent as the bearer token as given, with no
/// token endpoint.
#[tokio::test]
async fn a_static_access_token() {
    let g = Google::start(3600).await;
    g.issued
        .0
        .lock()
        .unwrap()
        .insert("ya29.static-token".to_owned());
    let provider = format!(
        "  - {{ id: vx, kind: vertex, project: {PROJECT}, location: {LOCATION}, base_url: \"{}\", access_token: \"${{VERTEX_TOKEN}}\", models: [{GEMINI}] }}\n",
        g.vertex.base_url()
    );
    let models = logical(&[("vx", "gemini", GEMINI)]);
    let gw = Gateway::start_with_env(
        &config(&provider, &models),
        &[("VERTEX_TOKEN", "ya29.static-token")],
    )
    .await;
    let req = wire::client_request(
        Wire::Anthropic,
        "vx.gemini",
        Scenario::Text,
        false,
        CLIENT_KEY,
    );
    let a = wire::read_ok_answer(Wire::Anthropic, false, &wire::send_to(&gw, &req).await);
    assert_eq!(a.text, wire::ANSWER);
    assert_eq!(
        g.vertex.last().header("authorization"),
        Some("Bearer ya29.static-token")
    );
    assert_eq!(g.tokens.count(), 0);
    assert!(!gw.log().contains("ya29.static-token"));
}

/// A health check lists Google's publisher models with the provider's
/// token.
#[tokio::test]
async fn a_health_check_lists_publisher_models_with_the_token() {
    let g = Google::start(3600).await;
    let dir = TempDir::new();
    let key = key_file(&dir, KEY);
    let gw = Gateway::start(&config(&g.provider("vx", &key), "")).await;
    let h = gw.get_json("/providers/vx/health?probe=true", ADMIN).await;
    assert_eq!(h["last_probe"]["ok"], true, "{h}");
    let listed = g
        .vertex
        .requests
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("a listing");
    assert_eq!(listed.method, "GET");
    assert_eq!(
        listed.header("authorization"),
        Some(&*format!("Bearer {TOKEN_PREFIX}1"))
    );
    assert_eq!(g.tokens.count(), 1);
}
