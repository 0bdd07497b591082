//! `kind: bedrock` end to end, through the real binary: a mock Bedrock
//! runtime on loopback that checks every request's SigV4 signature by
//! computing it again with the AWS signer and the known secret (a mismatch
//! is AWS's 403 `InvalidSignatureException`), validates the Converse body
//! as AWS does, and answers Converse JSON or ConverseStream in real
//! event-stream frames split across reads; every client format, streaming
//! and not; a tool-use round trip; throttling failing over to an `openai`
//! provider; an exception frame mid-stream; a wrong secret.

use crate::common;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use common::wire::{self, Scenario, Shape, Wire, ALL};
use common::*;
use serde_json::{json, Value};

const CLIENT_KEY: &str = "ck-bedrock-test-0001";
const ADMIN: &str = "admin-key-bedrock-1";
const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD-test-token";
const REGION: &str = "us-east-1";

/// Model ids the mock serves, as Bedrock names them.
const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";
/// An inference profile: a region prefix before the model id.
const PROFILE: &str = "us.anthropic.claude-sonnet-4-20250514-v1:0";
/// Answers 429 `ThrottlingException`.
const THROTTLED: &str = "throttled.model-v1:0";
/// Streams a first piece of text, then an exception frame.
const MIDFAIL: &str = "midfail.model-v1:0";
const MODELS: [&str; 4] = [HAIKU, PROFILE, THROTTLED, MIDFAIL];

/// The top-level fields Converse accepts; any other is a 400.
const CONVERSE_FIELDS: [&str; 10] = [
    "messages",
    "system",
    "inferenceConfig",
    "toolConfig",
    "additionalModelRequestFields",
    "guardrailConfig",
    "promptVariables",
    "additionalModelResponseFieldPaths",
    "requestMetadata",
    "performanceConfig",
];

/// An AWS error: its status, `x-amzn-errortype` and `{"message"}` body.
fn aws_error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(status, json!({ "message": message }).to_string()).header(
        "x-amzn-errortype",
        &format!("{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
    )
}

fn validation(message: &str) -> Reply {
    aws_error(400, "ValidationException", message)
}

/// The time a request was signed at, from its `x-amz-date`.
fn signed_at(amz_date: &str) -> Option<SystemTime> {
    let dt = jiff::fmt::strtime::parse("%Y%m%dT%H%M%SZ", amz_date)
        .ok()?
        .to_datetime()
        .ok()?;
    let ts = dt.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(SystemTime::from(ts))
}

/// What AWS does first: recompute the signature of the request as it
/// arrived (method, path, `Host`, body, the signed time) with the secret
/// of the access key it names, and compare. `Err`: AWS's refusal.
fn check_signature(rec: &Recorded) -> Result<(), Reply> {
    let invalid_token = || {
        aws_error(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    };
    let auth = rec.header("authorization").ok_or_else(|| {
        aws_error(
            403,
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        )
    })?;
    let scope = format!("{ACCESS_KEY}/");
    let credential = auth.split("Credential=").nth(1).ok_or_else(invalid_token)?;
    if !credential.starts_with(&scope) {
        return Err(invalid_token());
    }
    if rec.header("x-amz-security-token") != Some(SESSION_TOKEN) {
        return Err(invalid_token());
    }
    let time = rec
        .header("x-amz-date")
        .and_then(signed_at)
        .ok_or_else(|| {
            aws_error(
                400,
                "IncompleteSignatureException",
                "x-amz-date is missing or malformed",
            )
        })?;
    let host = rec.header("host").unwrap_or_default();
    let identity = Credentials::new(
        ACCESS_KEY,
        SECRET,
        Some(SESSION_TOKEN.to_owned()),
        None,
        "test",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(REGION)
        .name("bedrock")
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let signable = SignableRequest::new(
        &rec.method,
        format!("http://{host}{}", rec.path),
        std::iter::empty(),
        SignableBody::Bytes(&rec.body),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let (headers, _) = instructions.into_parts();
    let want = headers
        .iter()
        .find(|h| h.name() == "authorization")
        .map(|h| h.value().to_owned());
    if want.as_deref() != Some(auth) {
        return Err(aws_error(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        ));
    }
    Ok(())
}

/// The model id of `/model/{id}/converse[-stream]` (percent-decoded) and
/// whether it streams.
fn route(path: &str) -> Option<(String, bool)> {
    let rest = path.strip_prefix("/model/")?;
    let (id, action) = rest.split_once('/')?;
    let stream = match action {
        "converse" => false,
        "converse-stream" => true,
        _ => return None,
    };
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8()
        .ok()?
        .into_owned();
    Some((id, stream))
}

/// The checks of a Converse body AWS makes that a translator could get
/// wrong; the message is AWS's kind of words.
fn check_body(v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("body must be an object")?;
    if let Some(k) = obj.keys().find(|k| !CONVERSE_FIELDS.contains(&k.as_str())) {
        return Err(format!("extraneous key [{k}] is not permitted"));
    }
    let messages = v["messages"].as_array().ok_or("messages is required")?;
    let mut uses = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let want = if i % 2 == 0 { "user" } else { "assistant" };
        if m["role"] != want {
            return Err(format!(
                "messages[{i}]: roles must alternate, starting with user"
            ));
        }
        let content = m["content"].as_array().filter(|c| !c.is_empty());
        for block in content.ok_or(format!("messages[{i}].content must not be empty"))? {
            if let Some(t) = block.get("toolUse") {
                uses.push(t["toolUseId"].as_str().unwrap_or_default().to_owned());
                if !t["input"].is_object() {
                    return Err(format!("messages[{i}]: toolUse.input must be an object"));
                }
            }
            if let Some(r) = block.get("toolResult") {
                let id = r["toolUseId"].as_str().unwrap_or_default();
                if !uses.iter().any(|u| u == id) {
                    return Err(format!("messages[{i}]: toolResult {id} matches no toolUse"));
                }
            }
            if block.get("model").is_some() {
                return Err("unknown block".into());
            }
        }
    }
    if !uses.is_empty() && v.get("toolConfig").is_none() {
        return Err("The toolConfig field must be defined when using toolUse and toolResult content blocks.".into());
    }
    for k in v["inferenceConfig"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        if !["maxTokens", "temperature", "topP", "stopSequences"].contains(&k.as_str()) {
            return Err(format!("inferenceConfig: extraneous key [{k}]"));
        }
    }
    Ok(())
}

fn usage(shape: Shape) -> Value {
    let (i, o) = shape.usage();
    json!({"inputTokens": i, "outputTokens": o, "totalTokens": i + o})
}

const TOOL_USE_ID: &str = "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q";

fn converse_json(shape: Shape) -> Value {
    let mut content = vec![json!({ "text": shape.text() })];
    if shape == Shape::Tool {
        content.push(json!({"toolUse": {"toolUseId": TOOL_USE_ID, "name": wire::TOOL_NAME, "input": wire::tool_args()}}));
    }
    let stop = if shape == Shape::Tool {
        "tool_use"
    } else {
        "end_turn"
    };
    json!({"output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop, "usage": usage(shape), "metrics": {"latencyMs": 412}})
}

/// One event-stream frame as Bedrock sends it (with its `p` padding).
fn frame(out: &mut Vec<u8>, headers: &[(&str, &str)], mut payload: Value) {
    payload["p"] = json!("abcdefghijklmnopqrstu");
    let mut m = Message::new(payload.to_string().into_bytes());
    for (k, v) in headers {
        m = m.add_header(Header::new(
            k.to_string(),
            HeaderValue::String(v.to_string().into()),
        ));
    }
    write_message_to(&m, out).expect("frame");
}

fn event(out: &mut Vec<u8>, name: &str, payload: Value) {
    frame(
        out,
        &[
            (":event-type", name),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload,
    );
}

/// The frames of a ConverseStream answer; `midfail`: a first piece of text,
/// then an exception frame.
fn converse_frames(shape: Shape, midfail: bool) -> Vec<u8> {
    let mut out = Vec::new();
    event(&mut out, "messageStart", json!({"role": "assistant"}));
    let pieces = if shape == Shape::Tool {
        vec![wire::PREFACE]
    } else {
        wire::ANSWER_PIECES.to_vec()
    };
    for p in pieces {
        event(
            &mut out,
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": p}}),
        );
        if midfail {
            frame(
                &mut out,
                &[
                    (":exception-type", "modelStreamErrorException"),
                    (":content-type", "application/json"),
                    (":message-type", "exception"),
                ],
                json!({"message": "The model stream broke off", "originalStatusCode": 424}),
            );
            return out;
        }
    }
    event(
        &mut out,
        "contentBlockStop",
        json!({"contentBlockIndex": 0}),
    );
    if shape == Shape::Tool {
        event(
            &mut out,
            "contentBlockStart",
            json!({"contentBlockIndex": 1,
            "start": {"toolUse": {"toolUseId": TOOL_USE_ID, "name": wire::TOOL_NAME}}}),
        );
        for piece in wire::TOOL_ARGS_PIECES {
            event(
                &mut out,
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}}),
            );
        }
        event(
            &mut out,
            "contentBlockStop",
            json!({"contentBlockIndex": 1}),
        );
    }
    let stop = if shape == Shape::Tool {
        "tool_use"
    } else {
        "end_turn"
    };
    event(&mut out, "messageStop", json!({ "stopReason": stop }));
    event(
        &mut out,
        "metadata",
        json!({"usage": usage(shape), "metrics": {"latencyMs": 380}}),
    );
    out
}

/// A ConverseStream reply: the frames cut into 37-byte reads, so frames
/// straddle reads as they do off a real socket.
fn stream_reply(bytes: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        content_type: "application/vnd.amazon.eventstream".into(),
        headers: vec![(
            "x-amzn-requestid".into(),
            "6f1c3e2a-0b5d-4a8e-9c7f-2d1e0a9b8c7d".into(),
        )],
        chunks: bytes
            .chunks(37)
            .map(|c| (Duration::ZERO, c.to_vec()))
            .collect(),
        delay: Duration::ZERO,
        cut_after: None,
        chunked: true,
    }
}

/// What Bedrock would do with `rec`.
fn bedrock_reply(rec: &Recorded) -> Reply {
    let Some((model, stream)) = route(&rec.path) else {
        return aws_error(404, "UnknownOperationException", "Unknown operation");
    };
    if let Err(refusal) = check_signature(rec) {
        return refusal;
    }
    if !MODELS.contains(&model.as_str()) {
        return validation("The provided model identifier is invalid.");
    }
    let body: Value = match serde_json::from_slice(&rec.body) {
        Ok(v) => v,
        Err(_) => {
            return validation("Malformed input request, please reformat your input and try again.")
        }
    };
    if let Err(e) = check_body(&body) {
        return validation(&e);
    }
    if model == THROTTLED {
        return aws_error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        );
    }
    let text = rec.body.as_slice();
    let has = |s: &str| memchr_find(text, s.as_bytes());
    let shape = if has(wire::TOOL_NAME) && !has(wire::TOOL_OUTPUT) {
        Shape::Tool
    } else {
        Shape::Text
    };
    if stream {
        stream_reply(converse_frames(shape, model == MIDFAIL))
    } else {
        Reply::json(200, converse_json(shape).to_string())
    }
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn bedrock_mock() -> MockProvider {
    MockProvider::start(|rec, _| bedrock_reply(rec)).await
}

/// The credentials as `${VAR}`s in the config.
const CONFIGURED: &str = "access_key_id: \"${BEDROCK_KEY_ID}\", secret_access_key: \"${BEDROCK_SECRET}\", session_token: \"${BEDROCK_TOKEN}\", ";

/// A bedrock provider `id` on `mock`; `credentials`: its credential keys
/// ([`CONFIGURED`]), or none to take AWS's standard variables.
fn bedrock_provider(id: &str, mock: &MockProvider, credentials: &str) -> String {
    format!(
        "  - {{ id: {id}, kind: bedrock, region: {REGION}, base_url: \"{}\", {credentials}models: [\"{HAIKU}\", {{name: \"{PROFILE}\", alias: sonnet}}, \"{THROTTLED}\", \"{MIDFAIL}\"] }}\n",
        mock.base_url()
    )
}

fn config(providers: &str, models: &str) -> String {
    format!(
        "auth:\n  admin_keys: [{ADMIN}]\n  keys:\n    - {{ name: tester, key: {CLIENT_KEY} }}\nproviders:\n{providers}{models}"
    )
}

/// The credentials in the gateway's environment, under the names
/// [`CONFIGURED`] refers to and under AWS's standard names.
fn env(secret: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BEDROCK_KEY_ID", ACCESS_KEY.to_owned()),
        ("BEDROCK_SECRET", secret.to_owned()),
        ("BEDROCK_TOKEN", SESSION_TOKEN.to_owned()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.to_owned()),
    ]
}

async fn start(cfg: &str, secret: &str) -> Gateway {
    let env = env(secret);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Gateway::start_with_env(cfg, &pairs).await
}

fn converse(rec: &Recorded) -> Value {
    serde_json::from_slice(&rec.body).expect("Converse body")
}

/// The mock's own strictness: an unsigned, badly signed or badly shaped
/// request is refused as AWS refuses it, so the gateway passing the tests
/// below means it signs and shapes correctly.
#[tokio::test]
async fn the_mock_rejects_what_bedrock_rejects() {
    let mock = bedrock_mock().await;
    let base = mock.base_url();
    let host = base.trim_start_matches("http://").to_owned();
    let body = json!({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).to_string();
    let signed = |secret: &str, path: &str, body: &str| {
        let identity = Credentials::new(
            ACCESS_KEY,
            secret,
            Some(SESSION_TOKEN.to_owned()),
            None,
            "t",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let req = SignableRequest::new(
            "POST",
            format!("http://{host}{path}"),
            std::iter::empty(),
            SignableBody::Bytes(body.as_bytes()),
        )
        .unwrap();
        let (i, _) = sign(req, &params).unwrap().into_parts();
        let (headers, _) = i.into_parts();
        headers
            .iter()
            .map(|h| (h.name().to_owned(), h.value().to_owned()))
            .collect::<Vec<_>>()
    };
    let post = |path: String, headers: Vec<(String, String)>, body: String| {
        let mut r = client()
            .post(format!("{base}{path}"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.body(body).send()
    };
    let path = format!("/model/{}/converse", HAIKU.replace(':', "%3A"));
    let ok = post(path.clone(), signed(SECRET, &path, &body), body.clone())
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // Wrong secret; a body changed after signing; no signature; a body
    // with a `model` field (Converse names it in the path only).
    let wrong = post(
        path.clone(),
        signed("not-the-secret", &path, &body),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), 403);
    assert!(wrong
        .text()
        .await
        .unwrap()
        .contains("signature we calculated does not match"));
    let tampered = post(
        path.clone(),
        signed(SECRET, &path, &body),
        body.replace("hi", "ho"),
    )
    .await
    .unwrap();
    assert_eq!(tampered.status(), 403);
    assert_eq!(
        post(path.clone(), vec![], body.clone())
            .await
            .unwrap()
            .status(),
        403
    );
    let with_model =
        json!({"model": HAIKU, "messages": [{"role": "user", "content": [{"text": "hi"}]}]})
            .to_string();
    let r = post(path.clone(), signed(SECRET, &path, &with_model), with_model)
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// Every client format, streaming and not, with tools and without, reaches
/// Bedrock's Converse (or ConverseStream) signed, for a model id and for
/// an inference profile (its `:` percent-encoded in the path).
#[tokio::test]
async fn every_client_format_reaches_converse_signed() {
    let mock = bedrock_mock().await;
    let models = "models:\n  - name: haiku\n    upstreams: [{ provider: bd, model: \"anthropic.claude-3-5-haiku-20241022-v1:0\" }]\n  - name: sonnet\n    upstreams: [{ provider: bd, model: sonnet }]\n";
    let gw = start(
        &config(&bedrock_provider("bd", &mock, CONFIGURED), models),
        SECRET,
    )
    .await;
    for (model, id) in [("haiku", HAIKU), ("sonnet", PROFILE)] {
        for client_wire in ALL {
            for stream in [false, true] {
                for scenario in [Scenario::Text, Scenario::Tool] {
                    let req =
                        wire::client_request(client_wire, model, scenario, stream, CLIENT_KEY);
                    let a =
                        wire::read_ok_answer(client_wire, stream, &wire::send_to(&gw, &req).await);
                    let shape = scenario.shape();
                    let at = format!("{model} {client_wire:?} stream={stream} {scenario:?}");
                    assert_eq!(a.text, shape.text(), "{at}: {a:?}");
                    assert_eq!(a.finish, wire::expected_finish(client_wire, shape), "{at}");
                    assert_eq!(a.calls.len(), shape.calls().len(), "{at}: {a:?}");
                    if let Some(call) = a.calls.first() {
                        assert_eq!(call.name, wire::TOOL_NAME, "{at}");
                        assert_eq!(call.args, wire::tool_args(), "{at}");
                    }
                    if let Some(u) = a.usage {
                        assert_eq!(u, shape.usage(), "{at}");
                    }
                    let rec = mock.last();
                    let action = if stream {
                        "converse-stream"
                    } else {
                        "converse"
                    };
                    assert_eq!(
                        rec.path,
                        format!("/model/{}/{action}", id.replace(':', "%3A")),
                        "{at}"
                    );
                    let body = converse(&rec);
                    assert_eq!(body["system"], json!([{"text": wire::SYSTEM}]), "{at}");
                    assert_eq!(
                        body["messages"][0]["content"][0]["text"],
                        wire::QUESTION,
                        "{at}"
                    );
                    let tools = &body["toolConfig"]["tools"];
                    if scenario == Scenario::Tool {
                        assert_eq!(tools[0]["toolSpec"]["name"], wire::TOOL_NAME, "{at}");
                        assert_eq!(
                            tools[0]["toolSpec"]["inputSchema"]["json"]["required"],
                            json!(["city"]),
                            "{at}"
                        );
                    } else {
                        assert!(tools.is_null(), "{at}");
                    }
                }
            }
        }
    }
}

/// A tool call's result sent back by each client format reaches Converse
/// as a `toolResult` paired with the `toolUse` before it (Bedrock refuses
/// an unpaired one), and the model's answer reaches the client.
#[tokio::test]
async fn a_tool_use_round_trip_from_every_client() {
    let mock = bedrock_mock().await;
    let models = "models:\n  - name: haiku\n    upstreams: [{ provider: bd, model: \"anthropic.claude-3-5-haiku-20241022-v1:0\" }]\n";
    let gw = start(
        &config(&bedrock_provider("bd", &mock, CONFIGURED), models),
        SECRET,
    )
    .await;
    for client_wire in ALL {
        for stream in [false, true] {
            let req = wire::client_request(
                client_wire,
                "haiku",
                Scenario::ToolResult,
                stream,
                CLIENT_KEY,
            );
            let a = wire::read_ok_answer(client_wire, stream, &wire::send_to(&gw, &req).await);
            assert_eq!(a.text, wire::ANSWER, "{client_wire:?} {stream}");
            let body = converse(&mock.last());
            let messages = body["messages"].as_array().expect("messages");
            assert_eq!(messages.len(), 3, "{body}");
            let call = &messages[1]["content"][0]["toolUse"];
            assert_eq!(call["name"], wire::TOOL_NAME, "{body}");
            assert_eq!(call["input"], wire::tool_args(), "{body}");
            let result = &messages[2]["content"][0]["toolResult"];
            assert_eq!(result["toolUseId"], call["toolUseId"], "{body}");
            // Gemini's function response is an object: its JSON text.
            let output = result["content"][0]["text"].as_str().unwrap_or_default();
            assert!(output.contains(wire::TOOL_OUTPUT), "{body}");
            assert_eq!(result["status"], "success", "{body}");
        }
    }
}

/// Bedrock throttling (429 `ThrottlingException`) gives way to the
/// `openai` provider behind it, before any byte reaches the client.
#[tokio::test]
async fn throttled_bedrock_fails_over_to_openai() {
    let bedrock = bedrock_mock().await;
    let openai = MockProvider::start(|rec, _| wire::provider_reply(Wire::Chat, rec)).await;
    let providers = format!(
        "{}  - {{ id: oai, kind: openai, base_url: \"{}\", api_keys: [sk-proj-oai-test], models: [gpt-4o-mini] }}\n",
        // Credentials from AWS's standard variables.
        bedrock_provider("bd", &bedrock, ""),
        openai.base_url()
    );
    // The order of a model's upstreams is a weighted draw: Bedrock, far
    // heavier, is drawn first almost always; the loop waits for the draw.
    let models = "models:\n  - name: smart\n    upstreams: [{ provider: bd, model: \"throttled.model-v1:0\", weight: 1000 }, { provider: oai, model: gpt-4o-mini, weight: 1 }]\n";
    let gw = start(&config(&providers, models), SECRET).await;
    let mut sent = 0;
    while bedrock.count() == 0 {
        assert!(sent < 50, "Bedrock never drawn in {sent} requests");
        let client_wire = ALL[sent % ALL.len()];
        let stream = sent % 2 == 0;
        let req = wire::client_request(client_wire, "smart", Scenario::Text, stream, CLIENT_KEY);
        let a = wire::read_ok_answer(client_wire, stream, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, wire::ANSWER, "{client_wire:?}");
        assert_eq!(
            wire::requested_model(Wire::Chat, &openai.last()),
            "gpt-4o-mini"
        );
        sent += 1;
    }
    // The throttled request was signed and well formed: refused for its
    // rate only.
    let rec = bedrock.last();
    assert!(check_signature(&rec).is_ok(), "{:?}", rec.headers);
    assert!(check_body(&converse(&rec)).is_ok());
    // Its credentials then rest, as a rate-limited key does: Bedrock is
    // not asked again.
    for client_wire in ALL {
        let req = wire::client_request(client_wire, "smart", Scenario::Text, false, CLIENT_KEY);
        let a = wire::read_ok_answer(client_wire, false, &wire::send_to(&gw, &req).await);
        assert_eq!(a.text, wire::ANSWER, "{client_wire:?}");
    }
    assert_eq!(bedrock.count(), 1);
    let h = gw.get_json("/providers/bd/health", ADMIN).await;
    assert_eq!(h["keys"][0]["cause"], "rate_limited", "{h}");
}

/// An exception frame after the first text ends each client's stream with
/// one error event in its own shape, the text before it delivered.
#[tokio::test]
async fn an_exception_frame_mid_stream_is_an_error_event() {
    let mock = bedrock_mock().await;
    let models = "models:\n  - name: flaky\n    upstreams: [{ provider: bd, model: \"midfail.model-v1:0\" }]\n";
    let gw = start(
        &config(&bedrock_provider("bd", &mock, CONFIGURED), models),
        SECRET,
    )
    .await;
    for client_wire in ALL {
        let req = wire::client_request(client_wire, "flaky", Scenario::Text, true, CLIENT_KEY);
        let (status, ct, body) = wire::send_to(&gw, &req).await;
        assert_eq!(status, 200, "{client_wire:?}: {body}");
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        assert!(
            body.contains(wire::ANSWER_PIECES[0]),
            "{client_wire:?}: {body}"
        );
        assert!(
            body.contains("The model stream broke off"),
            "{client_wire:?}: {body}"
        );
        assert!(
            !body.contains(wire::ANSWER_PIECES[1]),
            "{client_wire:?}: {body}"
        );
        let error_events = body
            .split("\n\n")
            .filter(|e| e.contains("The model stream broke off"))
            .count();
        assert_eq!(error_events, 1, "{client_wire:?}: {body}");
        match client_wire {
            Wire::Anthropic => assert!(body.contains("event: error"), "{body}"),
            Wire::Responses => assert!(body.contains("\"type\":\"error\""), "{body}"),
            Wire::Chat | Wire::Gemini => assert!(body.contains("\"error\""), "{body}"),
        }
    }
}

/// A wrong secret: Bedrock's 403 reaches the client as a clear error in
/// its own shape, the credentials then rest as a refused key does (the
/// next requests are not sent), and neither the secret nor the session
/// token shows in an answer, the log, `/providers` or `/admin/config`.
#[tokio::test]
async fn a_wrong_secret_is_a_clear_error_and_no_secret_leaks() {
    let mock = bedrock_mock().await;
    let models = "models:\n  - name: haiku\n    upstreams: [{ provider: bd, model: \"anthropic.claude-3-5-haiku-20241022-v1:0\" }]\n";
    let wrong = "wrongSecretKeyAbcdefGhijklmnopQRSTUV12345";
    let gw = start(
        &config(&bedrock_provider("bd", &mock, CONFIGURED), models),
        wrong,
    )
    .await;
    for (i, client_wire) in ALL.into_iter().enumerate() {
        let req = wire::client_request(client_wire, "haiku", Scenario::Text, false, CLIENT_KEY);
        let (status, _, body) = wire::send_to(&gw, &req).await;
        let v: Value = serde_json::from_str(&body).expect("JSON error");
        let message = match client_wire {
            Wire::Anthropic => {
                assert_eq!(v["type"], "error", "{body}");
                v["error"]["message"].as_str()
            }
            _ => v["error"]["message"].as_str(),
        }
        .unwrap_or_default();
        let want = if i == 0 {
            (502, "the provider refused the gateway's credentials")
        } else {
            (503, "every key is cooling down")
        };
        assert_eq!(status, want.0, "{client_wire:?}: {body}");
        assert!(message.contains(want.1), "{client_wire:?}: {body}");
        assert!(!body.contains(wrong) && !body.contains(SESSION_TOKEN));
    }
    assert_eq!(mock.count(), 1, "refused once, then resting");
    let h = gw.get_json("/providers/bd/health", ADMIN).await;
    assert_eq!(h["keys"][0]["cause"], "refused", "{h}");
    let providers = gw.get_json("/providers", ADMIN).await.to_string();
    let admin = gw.get_json("/admin/config", ADMIN).await.to_string();
    for text in [gw.log(), providers, admin] {
        assert!(!text.contains(wrong), "secret in {text}");
        assert!(!text.contains(SESSION_TOKEN), "session token in {text}");
    }
}

/// `-t` names what a bedrock provider lacks, and bedrock's keys on another
/// kind.
#[test]
fn config_problems_are_named() {
    let (ok, out) = check_config_text(
        "providers:\n  - { id: bd, kind: bedrock, api_keys: [k] }\n  - { id: o, kind: openai, base_url: \"https://api.openai.com\", secret_access_key: s }\n",
    );
    assert!(!ok, "{out}");
    for needle in [
        "providers[0]: kind bedrock needs access_key_id and secret_access_key",
        "providers[0].region: kind bedrock needs its AWS region",
        "providers[0].api_keys: kind bedrock signs its requests",
        "providers[0].models: kind bedrock needs its models listed",
        "providers[1].secret_access_key: only for kind bedrock",
    ] {
        assert!(out.contains(needle), "{needle} not in {out}");
    }
    let (ok, out) = check_config_text(
        "providers:\n  - { id: bd, kind: bedrock, region: \"us-east-1.evil.com/\", access_key_id: a, secret_access_key: s, models: [m] }\n",
    );
    assert!(!ok && out.contains("is not an AWS region"), "{out}");
}
