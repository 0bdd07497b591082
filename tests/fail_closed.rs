//! Who may pass is decided in one place, and an unknown answer means no
//! (docs/security.md, "Invariants"): through the real binary, with real
//! Redis servers and loopback providers.

use crate::common;

use std::time::Duration;

use apiproxy_store::testing::RedisServer;
use common::wire;
use common::*;
use serde_json::{json, Value};

const ADMIN: &str = "admin-key-fail-closed-0123456789";
const PATIENCE: Duration = Duration::from_secs(15);

fn provider(mock: &MockProvider) -> String {
    format!(
        "providers:\n  - id: a\n    kind: openai\n    base_url: \"{}\"\n    api_keys: [ka]\n    models: [m]\n    pricing: {{ m: {{ input: 1000000, output: 1000000 }} }}\n",
        mock.base_url()
    )
}

async fn chat(gw: &Gateway, key: Option<&str>, session: Option<&str>) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-debug", "true");
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(s) = session {
        r = r.header("x-session-id", s);
    }
    r.json(&json!({"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("request")
}

/// Makes a key in the console's store; its secret.
async fn create_key(gw: &Gateway, body: Value) -> String {
    let r = client()
        .post(format!("{}/admin/keys", gw.url()))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["key"].as_str().expect("the new key").to_owned()
}

async fn revoke_key(gw: &Gateway, name: &str) {
    let r = client()
        .delete(format!("{}/admin/keys/{name}", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn error_message(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("an error body in the client's shape");
    v["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {v}"))
        .to_owned()
}

#[tokio::test]
async fn an_admin_key_alone_means_clients_need_keys_even_when_the_key_store_is_down() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let mut redis = RedisServer::start();
    redis.stop();
    let gw = Gateway::start(&format!(
        "store:\n  redis_url: {}\nauth:\n  admin_keys: [{ADMIN}]\n{}",
        redis.url,
        provider(&mock)
    ))
    .await;
    // No configured client key, and the stored ones cannot be read: before,
    // this gateway served everyone on the provider keys.
    let r = chat(&gw, None, None).await;
    assert_eq!(r.status(), 401);
    assert!(error_message(r).await.contains("missing API key"));
    let r = chat(&gw, Some("sk-apx-someone"), None).await;
    assert_eq!(r.status(), 503, "a key that cannot be checked is refused");
    assert!(r.headers().contains_key("retry-after"));
    assert!(error_message(r).await.contains("cannot be checked"));
    assert_eq!(mock.count(), 0, "nothing reached the provider");

    // The failure is not kept: once Redis answers, a key made there works,
    // and an unknown one is simply invalid.
    redis.restart();
    let key = create_key(&gw, json!({"name": "late"})).await;
    let ok = eventually(PATIENCE, || async {
        chat(&gw, Some(&key), None).await.status() == 200
    })
    .await;
    assert!(ok, "the stored key never worked:\n{}", gw.log());
    assert_eq!(chat(&gw, Some("sk-apx-someone"), None).await.status(), 401);
    assert_eq!(chat(&gw, None, None).await.status(), 401);
}

#[tokio::test]
async fn configured_keys_pass_while_stored_ones_cannot_be_checked() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let mut redis = RedisServer::start();
    redis.stop();
    let gw = Gateway::start(&format!(
        "store:\n  redis_url: {}\nauth:\n  keys: [{{ name: cfg, key: cfg-key }}]\n  admin_keys: [{ADMIN}]\n{}",
        redis.url,
        provider(&mock)
    ))
    .await;
    assert_eq!(chat(&gw, Some("cfg-key"), None).await.status(), 200);
    assert_eq!(chat(&gw, None, None).await.status(), 401);
    assert_eq!(chat(&gw, Some("sk-apx-other"), None).await.status(), 503);
    // The admin endpoints stay closed to anything but the admin key.
    let r = client()
        .get(format!("{}/admin/keys", gw.url()))
        .bearer_auth("sk-apx-other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn context_follows_the_same_decision_as_every_endpoint() {
    let mock =
        MockProvider::always(Reply::json(200, openai_completion("m", "secret answer"))).await;
    // Only console keys: `auth.keys` is empty.
    let gw = Gateway::start(&format!(
        "auth:\n  admin_keys: [{ADMIN}]\n{}",
        provider(&mock)
    ))
    .await;
    let alice = create_key(&gw, json!({"name": "alice"})).await;
    let bob = create_key(&gw, json!({"name": "bob"})).await;
    assert_eq!(chat(&gw, Some(&alice), Some("s-ctx")).await.status(), 200);
    let url = format!("{}/context/s-ctx", gw.url());
    let (v, written) = poll(
        PATIENCE,
        || async {
            client()
                .get(&url)
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        },
        |v| v["history"].as_array().is_some_and(|h| !h.is_empty()),
    )
    .await;
    assert!(written, "alice's context was never written: {v}");
    // Before, an empty `auth.keys` made every caller unrestricted here.
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(!r.text().await.unwrap().contains("secret answer"));
    let r = client().get(&url).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(!r.text().await.unwrap().contains("secret answer"));
    let r = client().get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_key_made_again_under_an_old_name_inherits_nothing() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "first life"))).await;
    let gw = Gateway::start(&format!(
        "auth:\n  admin_keys: [{ADMIN}]\n{}",
        provider(&mock)
    ))
    .await;
    let old = create_key(&gw, json!({"name": "ci", "budget_usd": 100.0})).await;
    assert_eq!(chat(&gw, Some(&old), Some("s-ci")).await.status(), 200);
    let url = format!("{}/context/s-ci", gw.url());
    let spent = |v: &Value| -> f64 {
        v["keys"]
            .as_array()
            .and_then(|ks| ks.iter().find(|k| k["name"] == "ci"))
            .and_then(|k| k["budget"]["spent_usd"].as_f64())
            .unwrap_or(0.0)
    };
    let (keys, charged) = poll(
        PATIENCE,
        || async { gw.get_json("/admin/keys", ADMIN).await },
        |v| spent(v) > 0.0,
    )
    .await;
    assert!(charged, "the first key's spend was never counted: {keys}");
    let has_context = eventually(PATIENCE, || async {
        let r = client().get(&url).bearer_auth(&old).send().await.unwrap();
        let v: Value = r.json().await.unwrap();
        v["history"].as_array().is_some_and(|h| !h.is_empty())
    })
    .await;
    assert!(has_context, "the first key's context was never written");

    revoke_key(&gw, "ci").await;
    assert_eq!(chat(&gw, Some(&old), None).await.status(), 401);
    let new = create_key(&gw, json!({"name": "ci", "budget_usd": 100.0})).await;
    // Not the old key's context, binding or spend.
    let r = client().get(&url).bearer_auth(&new).send().await.unwrap();
    assert_eq!(
        r.status(),
        403,
        "the new key read the revoked key's context"
    );
    let binding = gw.get_json("/admin/sessions/s-ci", ADMIN).await;
    assert!(
        binding["binding"]["owner"]
            .as_str()
            .is_some_and(|o| o.starts_with('~')),
        "the binding is owned by an id, not a name: {binding}"
    );
    let keys = gw.get_json("/admin/keys", ADMIN).await;
    assert_eq!(spent(&keys), 0.0, "the new key inherited the spend: {keys}");
}

#[tokio::test]
async fn reserved_key_names_are_refused() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start(&format!(
        "auth:\n  admin_keys: [{ADMIN}]\n{}",
        provider(&mock)
    ))
    .await;
    let r = client()
        .post(format!("{}/admin/keys", gw.url()))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "-"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    for name in ["-", "~0123456789abcdef"] {
        let out = check_config(&format!(
            "auth:\n  keys: [{{ name: \"{name}\", key: some-key }}]\n{}",
            provider(&mock)
        ));
        assert!(out.contains("is reserved"), "{name}: {out}");
    }
}

/// `apiproxy -t` on a config body (with a loopback listener); its output.
fn check_config(body: &str) -> String {
    check_config_text(&format!("server:\n  listen: 127.0.0.1:1\n{body}")).1
}

#[tokio::test]
async fn admin_keys_must_be_long_and_not_client_keys() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let short = check_config(&format!(
        "auth:\n  admin_keys: [short-admin-key]\n{}",
        provider(&mock)
    ));
    assert!(short.contains("shorter than 16 characters"), "{short}");
    let warned = check_config(&format!(
        "auth:\n  admin_keys: [admin-key-of-20-chars]\n{}",
        provider(&mock)
    ));
    assert!(warned.contains("shorter than 32 characters"), "{warned}");
    assert!(!warned.contains("shorter than 16"), "{warned}");
    let both = check_config(&format!(
        "auth:\n  keys: [{{ name: c, key: {ADMIN} }}]\n  admin_keys: [{ADMIN}]\n{}",
        provider(&mock)
    ));
    assert!(both.contains("is also a client key"), "{both}");
}

#[tokio::test]
async fn an_open_gateway_refuses_web_pages_and_rebound_names() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw =
        Gateway::start_with_server("allowed_hosts: [gateway.internal]", &provider(&mock)).await;
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let url = format!("{}/v1/chat/completions", gw.url());
        async move {
            let mut r = client().post(url);
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            r.json(&json!({"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
        }
    };
    // A local tool: no Origin.
    assert_eq!(send(&[]).await.status(), 200);
    assert_eq!(send(&[("host", "localhost")]).await.status(), 200);
    assert_eq!(
        send(&[("host", "gateway.internal:8080")]).await.status(),
        200
    );
    let before = mock.count();
    // A page on another site, by its Origin or by what the browser says.
    for headers in [
        &[("origin", "https://evil.example")][..],
        &[("origin", "null")][..],
        &[("sec-fetch-site", "cross-site")][..],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "http://localhost:1"),
        ][..],
    ] {
        let r = send(headers).await;
        assert_eq!(r.status(), 403, "{headers:?}");
        assert!(error_message(r).await.contains("cross-site"));
    }
    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    let r = send(&[("host", "evil.example")]).await;
    assert_eq!(r.status(), 421);
    assert!(error_message(r).await.contains("allowed_hosts"));
    assert_eq!(mock.count(), before, "nothing refused reached the provider");
    // Health stays open for probes.
    let r = client()
        .get(format!("{}/health", gw.url()))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn admin_answers_are_not_cached_and_failed_admin_logins_are_throttled_per_address() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let gw = Gateway::start(&format!(
        "auth:\n  admin_keys: [{ADMIN}]\n  admin_failures_per_minute: 3\n{}",
        provider(&mock)
    ))
    .await;
    // The create-key answer carries the secret: no cache may keep it.
    let r = client()
        .post(format!("{}/admin/keys", gw.url()))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "cached"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let r = client()
        .get(format!("{}/providers", gw.url()))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["cache-control"], "no-store");

    let from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let guesser = from("127.0.0.1");
    let url = format!("{}/admin/keys", gw.url());
    for guess in ["guess-1", "guess-2", "guess-3"] {
        let r = guesser.get(&url).bearer_auth(guess).send().await.unwrap();
        assert_eq!(r.status(), 401, "{guess}");
    }
    // Past the limit even the right key waits: nothing is compared.
    let r = guesser.get(&url).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another address is not slowed by this one's guesses.
    let r = from("127.0.0.2")
        .get(&url)
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn with_admin_listen_the_admin_surface_moves_off_the_client_listener() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let admin_port = free_port();
    let gw = Gateway::start_with_server(
        &format!("admin_listen: 127.0.0.1:{admin_port}"),
        &format!(
            "auth:\n  keys: [{{ name: c, key: client-key }}]\n  admin_keys: [{ADMIN}]\n{}",
            provider(&mock)
        ),
    )
    .await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    // The client listener: generation yes, admin no.
    assert_eq!(chat(&gw, Some("client-key"), None).await.status(), 200);
    for path in ["/admin/keys", "/providers", "/ui/"] {
        let r = client()
            .get(format!("{}{path}", gw.url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path} on the client listener");
    }
    // The admin listener: admin yes, generation no.
    for path in ["/admin/keys", "/providers"] {
        let r = client()
            .get(format!("{admin}{path}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin listener");
    }
    let r = client()
        .post(format!("{admin}/v1/chat/completions"))
        .bearer_auth("client-key")
        .json(&json!({"model": "a/m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        client()
            .get(format!("{admin}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// The id a Responses provider gives its answers (tests/common/wire).
const RESPONSE_ID: &str = "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41";

async fn responses(gw: &Gateway, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/responses", gw.url()))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn a_key_references_only_the_provider_objects_it_received() {
    let mock = MockProvider::start(|rec, _| wire::provider_reply(wire::Wire::Responses, rec)).await;
    let gw = Gateway::start(&format!(
        "auth:\n  keys:\n    - {{ name: alice, key: alice-key }}\n    - {{ name: bob, key: bob-key }}\n    - {{ name: trusted, key: trusted-key, provider_refs: any }}\nproviders:\n  - {{ id: r, kind: openai, wire_api: responses, base_url: \"{}\", api_keys: [kr], models: [m] }}\n",
        mock.base_url()
    ))
    .await;
    let first = json!({"model": "r/m", "input": "hi"});
    let r = responses(&gw, "alice-key", first.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], RESPONSE_ID);
    let sent = mock.count();

    // Another key cannot continue alice's response, even knowing its id:
    // to bob it does not exist (OpenAI's answer to an unknown id).
    let follow = json!({"model": "r/m", "input": "and?", "previous_response_id": RESPONSE_ID});
    let r = responses(&gw, "bob-key", follow.clone()).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        error_message(r).await,
        format!("Previous response with id '{RESPONSE_ID}' not found.")
    );
    assert_eq!(
        mock.count(),
        sent,
        "the refused request never reached the provider"
    );
    // Alice can (the id is remembered just after her answer).
    let ok = eventually(PATIENCE, || async {
        responses(&gw, "alice-key", follow.clone()).await.status() == 200
    })
    .await;
    assert!(
        ok,
        "alice could not continue her own response:\n{}",
        gw.log()
    );
    let last = mock.last().json();
    assert_eq!(last["previous_response_id"], RESPONSE_ID);

    // Objects that never come through the gateway: refused for everyone but
    // a key trusted with provider_refs: any.
    let sent = mock.count();
    for body in [
        json!({"model": "r/m", "input": "hi", "conversation": "conv_123"}),
        json!({"model": "r/m", "input": "hi", "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}),
        json!({"model": "r/m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
    ] {
        let r = responses(&gw, "alice-key", body.clone()).await;
        assert_eq!(r.status(), 403, "{body}");
    }
    assert_eq!(mock.count(), sent);
    let r = responses(
        &gw,
        "trusted-key",
        json!({"model": "r/m", "input": "hi", "conversation": "conv_123"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = responses(
        &gw,
        "trusted-key",
        json!({"model": "r/m", "input": "hi", "previous_response_id": "resp_elsewhere"}),
    )
    .await;
    assert_eq!(r.status(), 200);

    // A streamed answer's id counts too (from its response.created event).
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let r = responses(&gw, "bob-key", streamed).await;
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains(RESPONSE_ID));
    let ok = eventually(PATIENCE, || async {
        responses(&gw, "bob-key", follow.clone()).await.status() == 200
    })
    .await;
    assert!(ok, "bob could not continue the response streamed to him");
}

#[tokio::test]
async fn console_keys_in_the_key_file_keep_working_across_a_sighup() {
    let mock = MockProvider::always(Reply::json(200, openai_completion("m", "ok"))).await;
    let dir = TempDir::new();
    let gw = Gateway::start(&format!(
        "store:\n  path: {}/keys.redb\nauth:\n  admin_keys: [{ADMIN}]\n{}",
        dir.0.display(),
        provider(&mock)
    ))
    .await;
    let key = create_key(&gw, json!({"name": "kept"})).await;
    assert_eq!(chat(&gw, Some(&key), None).await.status(), 200);
    let ok = std::process::Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    gw.expect_log("config reloaded").await;
    assert_eq!(chat(&gw, Some(&key), None).await.status(), 200);
    assert_eq!(chat(&gw, None, None).await.status(), 401);
    // A key made after the reload is usable at once too.
    let later = create_key(&gw, json!({"name": "later"})).await;
    assert_eq!(chat(&gw, Some(&later), None).await.status(), 200);
}
