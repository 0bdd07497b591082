//! Responses API state on any upstream, through the real binary: a
//! Responses client continues its conversation with `previous_response_id`
//! against OpenAI-chat, Anthropic and Gemini upstreams (mock providers
//! speaking their true wire formats), which then receive the whole
//! conversation in their own shape; `GET` / `DELETE /v1/responses/{id}` and
//! `input_items`; another key's id reads as absent; `store: false` keeps
//! nothing; a streamed turn is kept; two replicas on one real Redis share
//! the state; a conversation a native Responses provider keeps stays on it;
//! the chain and size bounds, and the TTL records are kept with.

use crate::common;

use apiproxy_store::testing::{query, RedisServer};
use common::wire::{self, Wire, ANSWER, QUESTION};
use common::*;
use serde_json::{json, Value};

const ALICE: &str = "ck-alice-responses-0001";
const BOB: &str = "ck-bob-responses-0002";
const FOLLOW_UP: &str = "And tomorrow?";
const THIRD: &str = "And the day after?";

fn upstream_model(k: Wire) -> &'static str {
    match k {
        Wire::Chat | Wire::Responses => "gpt-4o-mini",
        Wire::Anthropic => "claude-sonnet-4-5",
        Wire::Gemini => "gemini-2.5-flash",
    }
}

fn provider_line(id: &str, k: Wire, base_url: &str) -> String {
    let (kind, wire_api) = match k {
        Wire::Chat => ("openai", ""),
        Wire::Responses => ("openai", ", wire_api: responses"),
        Wire::Anthropic => ("anthropic", ""),
        Wire::Gemini => ("gemini", ""),
    };
    format!(
        "  - {{ id: {id}, kind: {kind}{wire_api}, base_url: \"{base_url}\", api_keys: [\"pk-{id}\"], models: [{}] }}\n",
        upstream_model(k)
    )
}

const KEYS: &str = "auth:\n  keys:\n    - { name: alice, key: ck-alice-responses-0001 }\n    - { name: bob, key: ck-bob-responses-0002 }\n";

async fn post(gw: &Gateway, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/responses", gw.url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("request")
}

async fn call(gw: &Gateway, method: reqwest::Method, key: &str, path: &str) -> (u16, Value) {
    let r = client()
        .request(method, format!("{}{path}", gw.url()))
        .bearer_auth(key)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(gw: &Gateway, key: &str, path: &str) -> (u16, Value) {
    call(gw, reqwest::Method::GET, key, path).await
}

/// A turn that must succeed: its response.
async fn turn(gw: &Gateway, key: &str, body: Value) -> Value {
    let r = post(gw, key, &body).await;
    let status = r.status();
    let v: Value = r.json().await.expect("a JSON answer");
    assert_eq!(status, 200, "{body} → {v}\n{}", gw.log());
    v
}

fn message(model: &str, input: &str, previous: Option<&str>) -> Value {
    let mut b = json!({"model": model, "input": input});
    if let Some(p) = previous {
        b["previous_response_id"] = json!(p);
    }
    b
}

fn error_text(v: &Value) -> String {
    v["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The conversation a provider of `kind` received: (role, text) in order,
/// in the provider's own shape (system prompts left out).
fn conversation(kind: Wire, rec: &Recorded) -> Vec<(String, String)> {
    let v = rec.json();
    let (list, role_of): (&str, fn(&str) -> String) = match kind {
        Wire::Chat | Wire::Anthropic => ("messages", |r| r.to_owned()),
        Wire::Gemini => ("contents", |r| {
            if r == "model" { "assistant" } else { r }.to_owned()
        }),
        Wire::Responses => ("input", |r| r.to_owned()),
    };
    let content = if kind == Wire::Gemini {
        "parts"
    } else {
        "content"
    };
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("no `{list}` in {v}"))
        .iter()
        .filter(|m| m["role"] != "system")
        .map(|m| {
            (
                role_of(m["role"].as_str().unwrap_or_default()),
                wire::text_of(&m[content]),
            )
        })
        .collect()
}

fn said(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(r, t)| ((*r).to_owned(), (*t).to_owned()))
        .collect()
}

/// The text of a Responses object's first message output.
fn output_text(v: &Value) -> String {
    v["output"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "message")
        .map(|i| wire::text_of(&i["content"]))
        .collect()
}

/// One upstream of `kind` behind a gateway with alice and bob: turn 1
/// is kept, turn 2 and 3 reach the upstream as the whole conversation,
/// the endpoints read and delete, bob sees none of it.
async fn continues_on(kind: Wire) {
    let mock = MockProvider::start(move |rec, _| wire::provider_reply(kind, rec)).await;
    let gw = Gateway::start(&format!(
        "{KEYS}providers:\n{}",
        provider_line("up", kind, &mock.base_url())
    ))
    .await;
    let model = format!("up/{}", upstream_model(kind));

    let first = turn(&gw, ALICE, message(&model, QUESTION, None)).await;
    let id1 = first["id"].as_str().expect("an id").to_owned();
    assert_eq!(output_text(&first), ANSWER);
    let second = turn(&gw, ALICE, message(&model, FOLLOW_UP, Some(&id1))).await;
    assert_eq!(
        conversation(kind, &mock.last()),
        said(&[
            ("user", QUESTION),
            ("assistant", ANSWER),
            ("user", FOLLOW_UP)
        ]),
        "{kind:?} upstream"
    );
    let id2 = second["id"].as_str().expect("an id").to_owned();
    assert_ne!(id1, id2);
    turn(&gw, ALICE, message(&model, THIRD, Some(&id2))).await;
    assert_eq!(
        conversation(kind, &mock.last()),
        said(&[
            ("user", QUESTION),
            ("assistant", ANSWER),
            ("user", FOLLOW_UP),
            ("assistant", ANSWER),
            ("user", THIRD),
        ]),
        "a chain expands whole ({kind:?} upstream)"
    );

    // The response and its input items, in OpenAI's shapes.
    let (status, v) = get(&gw, ALICE, &format!("/v1/responses/{id2}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["id"], id2.as_str());
    assert_eq!(v["object"], "response");
    assert_eq!(v["previous_response_id"], id1.as_str());
    assert_eq!(output_text(&v), ANSWER);
    let (status, v) = get(&gw, ALICE, &format!("/v1/responses/{id2}/input_items")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "list");
    assert_eq!(v["has_more"], false);
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "only the turn's own input: {v}");
    assert_eq!(wire::text_of(&data[0]["content"]), FOLLOW_UP);
    assert_eq!(v["first_id"], data[0]["id"]);
    assert_eq!(v["last_id"], data[0]["id"]);

    // Bob: every id of alice's reads as absent.
    let sent = mock.count();
    for path in [
        format!("/v1/responses/{id1}"),
        format!("/v1/responses/{id1}/input_items"),
    ] {
        let (status, v) = get(&gw, BOB, &path).await;
        assert_eq!(status, 404, "{path}: {v}");
    }
    let (status, _) = call(
        &gw,
        reqwest::Method::DELETE,
        BOB,
        &format!("/v1/responses/{id1}"),
    )
    .await;
    assert_eq!(status, 404);
    let r = post(&gw, BOB, &message(&model, FOLLOW_UP, Some(&id1))).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        error_text(&v),
        format!("Previous response with id '{id1}' not found.")
    );
    assert_eq!(mock.count(), sent, "bob's turn never went upstream");

    // Alice deletes turn 1: it is gone, and so is every chain through it.
    let (status, v) = call(
        &gw,
        reqwest::Method::DELETE,
        ALICE,
        &format!("/v1/responses/{id1}"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"id": id1, "object": "response", "deleted": true}));
    let (status, _) = get(&gw, ALICE, &format!("/v1/responses/{id1}")).await;
    assert_eq!(status, 404);
    let r = post(&gw, ALICE, &message(&model, THIRD, Some(&id2))).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(error_text(&v).contains(&id1), "{v}");
}

#[tokio::test]
async fn a_conversation_continues_on_an_openai_chat_upstream() {
    continues_on(Wire::Chat).await;
}

#[tokio::test]
async fn a_conversation_continues_on_an_anthropic_upstream() {
    continues_on(Wire::Anthropic).await;
}

#[tokio::test]
async fn a_conversation_continues_on_a_gemini_upstream() {
    continues_on(Wire::Gemini).await;
}

#[tokio::test]
async fn store_false_keeps_nothing() {
    let mock = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let gw = Gateway::start(&format!(
        "{KEYS}providers:\n{}",
        provider_line("up", Wire::Chat, &mock.base_url())
    ))
    .await;
    let mut body = message("up/gpt-4o-mini", QUESTION, None);
    body["store"] = json!(false);
    let v = turn(&gw, ALICE, body).await;
    let id = v["id"].as_str().expect("an id");
    let (status, _) = get(&gw, ALICE, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    let sent = mock.count();
    let r = post(&gw, ALICE, &message("up/gpt-4o-mini", FOLLOW_UP, Some(id))).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        error_text(&v),
        format!("Previous response with id '{id}' not found.")
    );
    assert_eq!(mock.count(), sent);
}

/// The `response` of the `response.completed` event of a Responses stream.
fn completed(body: &str) -> Value {
    wire::sse_events(body)
        .into_iter()
        .filter_map(|e| serde_json::from_str::<Value>(&e.data).ok())
        .find(|v| v["type"] == "response.completed")
        .map(|mut v| v["response"].take())
        .unwrap_or_else(|| panic!("no response.completed in {body}"))
}

#[tokio::test]
async fn a_streamed_turn_is_kept_whole() {
    let mock = MockProvider::start(|rec, _| wire::provider_reply(Wire::Anthropic, rec)).await;
    let gw = Gateway::start(&format!(
        "{KEYS}providers:\n{}",
        provider_line("up", Wire::Anthropic, &mock.base_url())
    ))
    .await;
    let model = "up/claude-sonnet-4-5";
    let mut body = message(model, QUESTION, None);
    body["stream"] = json!(true);
    let r = post(&gw, ALICE, &body).await;
    assert_eq!(r.status(), 200);
    let done = completed(&r.text().await.unwrap());
    let id = done["id"].as_str().expect("an id").to_owned();
    // Kept before the stream ended: no waiting.
    let (status, v) = get(&gw, ALICE, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(output_text(&v), ANSWER);
    // And continued streaming too.
    let mut body = message(model, FOLLOW_UP, Some(&id));
    body["stream"] = json!(true);
    let r = post(&gw, ALICE, &body).await;
    assert_eq!(r.status(), 200);
    let second = completed(&r.text().await.unwrap());
    assert_eq!(
        conversation(Wire::Anthropic, &mock.last()),
        said(&[
            ("user", QUESTION),
            ("assistant", ANSWER),
            ("user", FOLLOW_UP)
        ])
    );
    let (status, v) = get(
        &gw,
        ALICE,
        &format!("/v1/responses/{}", second["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["previous_response_id"], id.as_str());
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_the_conversations() {
    let redis = RedisServer::start();
    let mock = MockProvider::start(|rec, _| wire::provider_reply(Wire::Gemini, rec)).await;
    let cfg = format!(
        "store:\n  redis_url: {}\n  key_prefix: \"rs:\"\n{KEYS}providers:\n{}",
        redis.url,
        provider_line("up", Wire::Gemini, &mock.base_url())
    );
    let (gw1, gw2) = tokio::join!(Gateway::start(&cfg), Gateway::start(&cfg));
    let model = "up/gemini-2.5-flash";
    let first = turn(&gw1, ALICE, message(model, QUESTION, None)).await;
    let id = first["id"].as_str().expect("an id").to_owned();
    // Continued on the other replica at once.
    turn(&gw2, ALICE, message(model, FOLLOW_UP, Some(&id))).await;
    assert_eq!(
        conversation(Wire::Gemini, &mock.last()),
        said(&[
            ("user", QUESTION),
            ("assistant", ANSWER),
            ("user", FOLLOW_UP)
        ])
    );
    // Kept in Redis for store.responses_ttl_seconds (30 days by default).
    let keys = query(redis.port, &["KEYS", "rs:response:*"]).unwrap();
    let apiproxy_store::testing::Reply::Array(keys) = keys else {
        panic!("KEYS: {keys:?}")
    };
    assert_eq!(keys.len(), 2, "{keys:?}");
    let key = keys[0].clone().text().unwrap();
    let ttl: i64 = query(redis.port, &["TTL", &key])
        .unwrap()
        .text()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 29 * 86400 && ttl <= 30 * 86400, "TTL {ttl}");
    // Read on one replica, deleted on the other.
    let (status, _) = get(&gw2, ALICE, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 200);
    let (status, _) = get(&gw1, BOB, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &gw2,
        reqwest::Method::DELETE,
        ALICE,
        &format!("/v1/responses/{id}"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = get(&gw1, ALICE, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_conversation_kept_by_a_responses_provider_stays_there() {
    let near = MockProvider::start(|rec, _| wire::provider_reply(Wire::Responses, rec)).await;
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let far_down = down.clone();
    let far = MockProvider::start(move |rec, _| {
        if far_down.load(std::sync::atomic::Ordering::SeqCst) {
            let e = wire::provider_error(Wire::Responses, 503, "The server is overloaded.");
            return Reply::json(503, e.to_string());
        }
        wire::provider_reply(Wire::Responses, rec)
    })
    .await;
    // `both` nearly always draws `near` first: only stickiness sends a
    // continued conversation to `far`.
    let gw = Gateway::start(&format!(
        "{KEYS}providers:\n{}{}models:\n  - name: both\n    upstreams: [{{ provider: near, model: gpt-4o-mini, weight: 1000 }}, {{ provider: far, model: gpt-4o-mini, weight: 0.001 }}]\n",
        provider_line("near", Wire::Responses, &near.base_url()),
        provider_line("far", Wire::Responses, &far.base_url()),
    ))
    .await;
    let first = turn(&gw, ALICE, message("far/gpt-4o-mini", QUESTION, None)).await;
    let id = first["id"].as_str().expect("an id").to_owned();
    // The provider keeps it: the gateway keeps nothing of its own.
    let (status, _) = get(&gw, ALICE, &format!("/v1/responses/{id}")).await;
    assert_eq!(status, 404);
    // The id is remembered just after the answer.
    let follow = message("both", FOLLOW_UP, Some(&id));
    let ok = eventually(WAIT, || async {
        post(&gw, ALICE, &follow).await.status() == 200
    })
    .await;
    assert!(ok, "alice could not continue:\n{}", gw.log());
    for _ in 0..3 {
        turn(&gw, ALICE, follow.clone()).await;
    }
    assert_eq!(
        near.count(),
        0,
        "a continued conversation left its provider"
    );
    assert_eq!(far.count(), 5);
    // The provider keeps the state: it is sent the id, not the history.
    assert_eq!(far.last().json()["previous_response_id"], id.as_str());
    // That provider down: a clear error, not a turn without its history.
    down.store(true, std::sync::atomic::Ordering::SeqCst);
    let r = post(&gw, ALICE, &follow).await;
    assert!(r.status().is_server_error(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    assert!(error_text(&v).contains("is kept by provider `far`"), "{v}");
    assert!(far.count() > 5, "the request went to its provider");
    assert_eq!(near.count(), 0, "nor anywhere else");
    // Bob cannot continue it.
    let r = post(&gw, BOB, &follow).await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn chains_and_records_are_bounded() {
    let mock = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let gw = Gateway::start(&format!(
        "store:\n  responses_max_chain: 2\n  responses_max_bytes: 2048\n{KEYS}providers:\n{}",
        provider_line("up", Wire::Chat, &mock.base_url())
    ))
    .await;
    let model = "up/gpt-4o-mini";
    let one = turn(&gw, ALICE, message(model, QUESTION, None)).await;
    let two = turn(&gw, ALICE, message(model, FOLLOW_UP, one["id"].as_str())).await;
    let three = turn(&gw, ALICE, message(model, THIRD, two["id"].as_str())).await;
    let sent = mock.count();
    let r = post(&gw, ALICE, &message(model, "more", three["id"].as_str())).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(error_text(&v).contains("store.responses_max_chain"), "{v}");
    assert_eq!(mock.count(), sent);

    // A record over responses_max_bytes is not kept.
    let big = "x".repeat(4096);
    let v = turn(&gw, ALICE, message(model, &big, None)).await;
    let (status, _) = get(
        &gw,
        ALICE,
        &format!("/v1/responses/{}", v["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(status, 404);
    gw.expect_log("over store.responses_max_bytes").await;
}

#[tokio::test]
async fn the_expanded_conversation_is_charged() {
    // Turn 1's answer is long; what either turn sends is short.
    let long = "sunny ".repeat(4000);
    let answer = long.clone();
    let mock = MockProvider::start(move |rec, _| {
        if rec.path.ends_with("/responses") {
            // A chat-only provider: wire_api auto goes on as chat.
            return Reply::json(404, json!({"error": {"message": "Not found"}}).to_string());
        }
        Reply::json(200, openai_completion("m", &answer))
    })
    .await;
    let gw = Gateway::start(&format!(
        "auth:\n  keys:\n    - {{ name: carol, key: ck-carol-responses-0003, tpm: 1000000 }}\nproviders:\n{}",
        provider_line("up", Wire::Chat, &mock.base_url())
    ))
    .await;
    let key = "ck-carol-responses-0003";
    let mut body = message("up/gpt-4o-mini", QUESTION, None);
    body["max_output_tokens"] = json!(1);
    let first = turn(&gw, key, body.clone()).await;
    body["input"] = json!(FOLLOW_UP);
    body["previous_response_id"] = first["id"].clone();
    let r = post(&gw, key, &body).await;
    assert_eq!(r.status(), 200);
    let remaining: u64 = r.headers()["x-ratelimit-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The window holds turn 1 (a few dozen tokens, reserved or settled)
    // and turn 2's reservation, which counts turn 1's answer (24000
    // bytes, about 6000 tokens at 4 bytes a token).
    assert!(remaining <= 1_000_000 - 6000, "remaining {remaining}");
    assert!(mock.last().body.len() > long.len());
}

#[tokio::test]
async fn a_token_count_counts_the_expanded_conversation() {
    let mock = MockProvider::start(|rec, _| {
        if rec.path.ends_with("/count_tokens") {
            return Reply::json(200, json!({"input_tokens": 42}).to_string());
        }
        wire::provider_reply(Wire::Anthropic, rec)
    })
    .await;
    let gw = Gateway::start(&format!(
        "{KEYS}providers:\n{}",
        provider_line("up", Wire::Anthropic, &mock.base_url())
    ))
    .await;
    let model = "up/claude-sonnet-4-5";
    let first = turn(&gw, ALICE, message(model, QUESTION, None)).await;
    let r = client()
        .post(format!("{}/v1/responses/input_tokens", gw.url()))
        .bearer_auth(ALICE)
        .json(&message(model, FOLLOW_UP, first["id"].as_str()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["input_tokens"], 42, "{v}");
    let counted = mock.last();
    assert!(counted.path.ends_with("/count_tokens"), "{}", counted.path);
    assert_eq!(
        conversation(Wire::Anthropic, &counted),
        said(&[
            ("user", QUESTION),
            ("assistant", ANSWER),
            ("user", FOLLOW_UP)
        ])
    );
    // Another key's id is not found there either.
    let r = client()
        .post(format!("{}/v1/responses/input_tokens", gw.url()))
        .bearer_auth(BOB)
        .json(&message(model, FOLLOW_UP, first["id"].as_str()))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
}
