//! OpenTelemetry traces (`telemetry.otlp`) through the real binary: an
//! OTLP/HTTP collector on loopback records what the gateway exports
//! (protobuf and JSON bodies decoded with `opentelemetry-proto`; an OTLP/gRPC
//! one is `opentelemetry-proto`'s tonic service), mock
//! providers record the `traceparent` each attempt sent. A client's trace is
//! joined, each upstream attempt is a child span (failovers and hedges
//! included), a stream is traced, a request without a `traceparent` starts a
//! new trace, `sample_ratio: 0` exports nothing, content and keys never
//! appear, and a collector that never answers slows no request (spans are
//! dropped and counted instead).

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ALICE: &str = "ck-otlp-alice-secret-0001";
const PROVIDER_KEY: &str = "pk-otlp-provider-secret-0002";
const PROMPT: &str = "the secret plans of the walrus";
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector on loopback: every POST's body decoded (protobuf
/// or JSON, by its content type) and its spans kept, then answered as its
/// [`Answer`] says.
struct Collector {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
    /// (path, content type) of each export.
    posts: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// How a collector answers each export it has read.
#[derive(Clone)]
enum Answer {
    /// 200: taken.
    Ok,
    /// Never (a hung collector): nothing is decoded or kept, and the
    /// connection stays open.
    Never,
    /// `307` to this endpoint's `/v1/traces`.
    Redirect(String),
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    async fn start(answer: Answer) -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let posts: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (s, p) = (spans.clone(), posts.clone());
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (s, p, a) = (s.clone(), p.clone(), answer.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, s, p, a).await;
                });
            }
        });
        Collector {
            port,
            spans,
            posts,
            task,
        }
    }

    /// An OTLP/gRPC collector on loopback (`TraceService/Export`, served
    /// by tonic over HTTP/2); each export's `x-collector-key` metadata is
    /// kept in `posts` as (`grpc`, its value).
    async fn start_grpc() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let spans: Arc<Mutex<Vec<Span>>> = Arc::default();
        let posts: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let service = GrpcCollector {
            spans: spans.clone(),
            posts: posts.clone(),
        };
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(service))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        Collector {
            port,
            spans,
            posts,
            task,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// The spans of trace `trace` (hex) once there are `n` of them; fails
    /// the test with what arrived when they do not within [`WAIT`].
    async fn trace(&self, trace: &str, n: usize) -> Vec<Span> {
        let (got, held) = poll(
            WAIT,
            || async {
                self.spans()
                    .into_iter()
                    .filter(|s| hex(&s.trace_id) == trace)
                    .collect::<Vec<_>>()
            },
            |s: &Vec<Span>| s.len() >= n,
        )
        .await;
        assert!(
            held,
            "trace {trace}: {} spans, not {n}: {got:#?}",
            got.len()
        );
        assert_eq!(got.len(), n, "{got:#?}");
        got
    }
}

/// Keeps every span of an export, whichever protocol brought it.
fn keep_spans(spans: &Mutex<Vec<Span>>, req: ExportTraceServiceRequest) {
    let mut kept = spans.lock().unwrap();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            kept.extend(ss.spans);
        }
    }
}

struct GrpcCollector {
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<Vec<(String, String)>>>,
}

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let key = request
            .metadata()
            .get("x-collector-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.posts.lock().unwrap().push(("grpc".to_owned(), key));
        keep_spans(&self.spans, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve(
    mut sock: tokio::net::TcpStream,
    spans: Arc<Mutex<Vec<Span>>>,
    posts: Arc<Mutex<Vec<(String, String)>>>,
    answer: Answer,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 8192];
            let n = sock.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if matches!(answer, Answer::Never) {
            continue;
        }
        let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let ct = header("content-type").unwrap_or_default();
        let req = if ct.contains("json") {
            serde_json::from_slice::<ExportTraceServiceRequest>(&body).expect("OTLP JSON")
        } else {
            ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf")
        };
        posts.lock().unwrap().push((path, ct.clone()));
        keep_spans(&spans, req);
        let out = match &answer {
            Answer::Redirect(to) => format!(
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {to}/v1/traces\r\n\
                 content-length: 0\r\n\r\n"
            ),
            _ => {
                let reply = if ct.contains("json") { "{}" } else { "" };
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n{reply}",
                    reply.len()
                )
            }
        };
        sock.write_all(out.as_bytes()).await?;
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A span's attribute, as text (a number or a bool written out; a list
/// joined with commas).
fn attr(s: &Span, key: &str) -> Option<String> {
    let v = s
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match v {
        Any::StringValue(s) => s.clone(),
        Any::IntValue(i) => i.to_string(),
        Any::DoubleValue(d) => d.to_string(),
        Any::BoolValue(b) => b.to_string(),
        Any::ArrayValue(a) => a
            .values
            .iter()
            .filter_map(|v| match v.value.as_ref()? {
                Any::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    })
}

/// Every attribute value of every span, as text.
fn all_values(spans: &[Span]) -> String {
    spans
        .iter()
        .flat_map(|s| {
            s.attributes
                .iter()
                .map(|a| format!("{}={:?}", a.key, a.value))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn server_span(spans: &[Span]) -> &Span {
    let servers: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(servers.len(), 1, "{spans:#?}");
    servers[0]
}

fn attempt_spans(spans: &[Span]) -> Vec<&Span> {
    let mut a: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    a.sort_by_key(|s| s.start_time_unix_nano);
    a
}

/// Providers `first` and `second` (model `m`, priced) and logical models:
/// `fast` on `first` then `second` (weights fix the order), `hedged` the
/// same with a hedge after 200 ms.
fn config(first: &MockProvider, second: &MockProvider, telemetry: &str) -> String {
    format!(
        r#"auth:
  keys:
    - {{ name: alice, key: {ALICE} }}
routing:
  scoring: {{ mode: weighted }}
  breaker: {{ consecutive_failures: 1000000, min_requests: 1000000 }}
  retry_rounds: 1
telemetry:
{telemetry}
providers:
  - id: first
    kind: openai
    base_url: "{}"
    api_keys: ["{PROVIDER_KEY}"]
    models: [m]
    pricing:
      m: {{ input: 1000000, output: 2000000 }}
  - {{ id: second, kind: openai, base_url: "{}", api_keys: ["{PROVIDER_KEY}"], models: [m] }}
models:
  - name: fast
    upstreams:
      - {{ provider: first, model: m, weight: 1000000 }}
      - {{ provider: second, model: m, weight: 0.000001 }}
  - name: hedged
    hedge_after_ms: 200
    hedge_non_stream: true
    upstreams:
      - {{ provider: first, model: m, weight: 1000000 }}
      - {{ provider: second, model: m, weight: 0.000001 }}
"#,
        first.base_url(),
        second.base_url(),
    )
}

fn otlp(c: &Collector, extra: &str) -> String {
    format!("  otlp:\n    endpoint: \"{}\"\n{extra}", c.endpoint())
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 50,
           "messages": [{"role": "user", "content": PROMPT}]})
}

async fn ask(gw: &Gateway, body: &Value, traceparent: Option<&str>) -> (u16, String) {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(ALICE)
        .header("tracestate", "congo=t61rcWkgMzE");
    if let Some(tp) = traceparent {
        r = r.header("traceparent", tp);
    }
    let resp = r.json(body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn ok_mock() -> impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static {
    |rec: &Recorded, _| {
        if rec.json()["stream"] == json!(true) {
            Reply::sse(&openai_stream("m", &["He", "llo"]))
        } else {
            Reply::json(200, openai_completion("m", "Hello"))
        }
    }
}

/// The `traceparent` a provider received: (trace id, span id, flags).
fn received_traceparent(m: &MockProvider) -> (String, String, String) {
    let tp = m
        .last()
        .header("traceparent")
        .expect("a traceparent upstream")
        .to_owned();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

#[tokio::test]
async fn joins_the_clients_trace_and_sends_the_attempts_traceparent_upstream() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let gw = Gateway::start(&config(&first, &second, &otlp(&collector, ""))).await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, body) = ask(&gw, &chat("fast", false), Some(&tp)).await;
    assert_eq!(status, 200, "{body}");

    let spans = collector.trace(CLIENT_TRACE, 2).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "chat fast");
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    let expect = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.request.model", "fast"),
        ("gen_ai.response.model", "m"),
        ("gen_ai.usage.input_tokens", "7"),
        ("gen_ai.usage.output_tokens", "3"),
        ("gen_ai.request.max_tokens", "50"),
        ("apiproxy.client_key.name", "alice"),
        ("apiproxy.provider.id", "first"),
        ("apiproxy.routing.candidates", "first/m,second/m"),
        ("http.response.status_code", "200"),
    ];
    for (k, v) in expect {
        assert_eq!(attr(server, k).as_deref(), Some(v), "{k}: {server:#?}");
    }
    // 7 input tokens at $1/token and 3 output at $2/token.
    assert_eq!(attr(server, "apiproxy.cost_usd").as_deref(), Some("13"));
    let score: f64 = attr(server, "apiproxy.routing.score")
        .expect("score")
        .parse()
        .unwrap();
    assert!(score > 0.0, "{score}");
    assert!(attr(server, "apiproxy.time_to_first_token").is_some());

    let attempts = attempt_spans(&spans);
    assert_eq!(attempts.len(), 1, "{spans:#?}");
    let a = attempts[0];
    assert_eq!(a.parent_span_id, server.span_id);
    assert_eq!(a.name, "chat m");
    assert_eq!(attr(a, "apiproxy.provider.id").as_deref(), Some("first"));
    assert_eq!(attr(a, "gen_ai.request.model").as_deref(), Some("m"));
    assert_eq!(attr(a, "apiproxy.attempt.outcome").as_deref(), Some("ok"));
    assert_eq!(attr(a, "http.response.status_code").as_deref(), Some("200"));
    assert!(a.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(a.end_time_unix_nano <= server.end_time_unix_nano);

    // The provider got the attempt span as its parent, in the same trace,
    // and the client's tracestate.
    let (trace, span, flags) = received_traceparent(&first);
    assert_eq!(trace, CLIENT_TRACE);
    assert_eq!(span, hex(&a.span_id));
    assert_eq!(flags, "01");
    assert_eq!(first.last().header("tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(server.trace_state, "congo=t61rcWkgMzE");

    // Neither the client's key, the provider's, nor the prompt.
    let values = all_values(&spans);
    for secret in [ALICE, PROVIDER_KEY, PROMPT] {
        assert!(!values.contains(secret), "{secret} exported:\n{values}");
    }
    // Sent to the traces path as protobuf.
    let posts = collector.posts.lock().unwrap().clone();
    assert!(
        posts
            .iter()
            .all(|(p, ct)| p == "/v1/traces" && ct == "application/x-protobuf"),
        "{posts:?}"
    );
}

/// The attempt spans' (provider, outcome), in the order they started.
fn outcomes(attempts: &[&Span]) -> Vec<(String, String)> {
    attempts
        .iter()
        .map(|a| {
            let get = |k| attr(a, k).unwrap_or_default();
            (get("apiproxy.provider.id"), get("apiproxy.attempt.outcome"))
        })
        .collect()
}

#[tokio::test]
async fn a_refused_request_is_traced_without_its_key() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let gw = Gateway::start(&config(&first, &second, &otlp(&collector, ""))).await;
    let wrong = "ck-otlp-wrong-key-0009";
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let resp = client()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .bearer_auth(wrong)
        .header("traceparent", &tp)
        .json(&chat("fast", false))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 401);
    let spans = collector.trace(CLIENT_TRACE, 1).await;
    let server = server_span(&spans);
    assert_eq!(server.name, "chat");
    assert_eq!(
        attr(server, "http.response.status_code").as_deref(),
        Some("401")
    );
    assert_eq!(attr(server, "error.type").as_deref(), Some("401"));
    assert_eq!(attr(server, "apiproxy.client_key.name"), None);
    let values = all_values(&spans);
    assert!(!values.contains(wrong), "{values}");
    assert_eq!(first.count(), 0);
}

#[tokio::test]
async fn a_failover_is_one_span_per_attempt_with_its_outcome() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::always(Reply::json(500, r#"{"error":{"message":"boom"}}"#)).await;
    let second = MockProvider::start(ok_mock()).await;
    let gw = Gateway::start(&config(&first, &second, &otlp(&collector, ""))).await;

    let (status, body) = ask(&gw, &chat("fast", false), None).await;
    assert_eq!(status, 200, "{body}");
    let (trace, _, _) = received_traceparent(&second);
    let spans = collector.trace(&trace, 3).await;
    let server = server_span(&spans);
    assert_eq!(
        attr(server, "apiproxy.provider.id").as_deref(),
        Some("second")
    );
    let attempts = attempt_spans(&spans);
    assert_eq!(
        outcomes(&attempts),
        [
            ("first".into(), "5xx".into()),
            ("second".into(), "ok".into())
        ]
    );
    assert_eq!(attr(attempts[0], "error.type").as_deref(), Some("5xx"));
    assert_eq!(
        attr(attempts[0], "http.response.status_code").as_deref(),
        Some("500")
    );
    assert!(attempts.iter().all(|a| a.parent_span_id == server.span_id));
    // Each attempt sent its own span as the parent, in the same trace.
    let sent: Vec<(String, String)> = [&first, &second]
        .iter()
        .map(|m| {
            let (t, s, _) = received_traceparent(m);
            (t, s)
        })
        .collect();
    let ids: Vec<(String, String)> = attempts
        .iter()
        .map(|a| (trace.clone(), hex(&a.span_id)))
        .collect();
    assert_eq!(sent, ids);
}

#[tokio::test]
async fn a_hedged_race_is_two_attempt_spans_the_loser_cancelled() {
    let collector = Collector::start(Answer::Ok).await;
    let slow = Reply::json(200, openai_completion("m", "late")).delay(Duration::from_secs(5));
    let first = MockProvider::always(slow).await;
    let second = MockProvider::start(ok_mock()).await;
    let cfg = config(&first, &second, &otlp(&collector, "")).replace(
        "  retry_rounds: 1\n",
        "  retry_rounds: 1\n  hedge_budget_percent: 100\n",
    );
    let gw = Gateway::start(&cfg).await;
    let (status, body) = ask(&gw, &chat("hedged", false), None).await;
    assert_eq!(status, 200, "{body}");
    let (trace, _, _) = received_traceparent(&second);
    let spans = collector.trace(&trace, 3).await;
    let attempts = attempt_spans(&spans);
    assert_eq!(
        outcomes(&attempts),
        [
            ("first".into(), "hedge_cancelled".into()),
            ("second".into(), "ok".into())
        ]
    );
    let (first_trace, first_span, _) = received_traceparent(&first);
    assert_eq!(first_trace, trace);
    assert_eq!(first_span, hex(&attempts[0].span_id));
    assert_eq!(
        attr(server_span(&spans), "apiproxy.attempts").as_deref(),
        Some("2")
    );
}

#[tokio::test]
async fn a_stream_without_traceparent_starts_a_new_trace_exported_as_json() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let extra = "    protocol: http/json\n  capture_content: false\n";
    let gw = Gateway::start(&config(&first, &second, &otlp(&collector, extra))).await;
    let (status, body) = ask(&gw, &chat("fast", true), None).await;
    assert_eq!(status, 200);
    assert!(body.contains("llo"), "{body}");
    let (trace, span, flags) = received_traceparent(&first);
    assert_ne!(trace, CLIENT_TRACE);
    assert_eq!(flags, "01");
    let spans = collector.trace(&trace, 2).await;
    let server = server_span(&spans);
    // A root span: no parent.
    assert!(server.parent_span_id.is_empty(), "{server:#?}");
    assert_eq!(attr(server, "apiproxy.stream").as_deref(), Some("true"));
    assert!(attr(server, "apiproxy.time_to_first_token").is_some());
    assert_eq!(hex(&attempt_spans(&spans)[0].span_id), span);
    let posts = collector.posts.lock().unwrap().clone();
    assert!(
        posts.iter().all(|(_, ct)| ct == "application/json"),
        "{posts:?}"
    );
    let values = all_values(&spans);
    assert!(!values.contains("walrus"), "{values}");
}

#[tokio::test]
async fn capture_content_exports_the_prompt_and_answer_redacted() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let gw = Gateway::start(&config(
        &first,
        &second,
        &otlp(&collector, "  capture_content: true\n"),
    ))
    .await;
    let mut body = chat("fast", false);
    body["api_key"] = json!("sk-in-the-body-0003");
    let (status, _) = ask(&gw, &body, None).await;
    assert_eq!(status, 200);
    let (trace, _, _) = received_traceparent(&first);
    let spans = collector.trace(&trace, 2).await;
    let server = server_span(&spans);
    let input = attr(server, "apiproxy.request.body").expect("the request body");
    assert!(input.contains(PROMPT), "{input}");
    assert!(!input.contains("sk-in-the-body-0003"), "{input}");
    let output = attr(server, "gen_ai.output.messages").expect("the answer");
    assert!(output.contains("Hello"), "{output}");
    assert!(!all_values(&spans).contains(ALICE));
}

#[tokio::test]
async fn sample_ratio_zero_exports_nothing_but_still_propagates() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let gw = Gateway::start(&config(
        &first,
        &second,
        &otlp(&collector, "    sample_ratio: 0\n"),
    ))
    .await;
    let unsampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    for tp in [None, Some(unsampled.as_str())] {
        let (status, _) = ask(&gw, &chat("fast", false), tp).await;
        assert_eq!(status, 200);
        let (_, span, flags) = received_traceparent(&first);
        assert_eq!(flags, "00");
        assert_ne!(span, CLIENT_SPAN);
    }
    assert_eq!(received_traceparent(&first).0, CLIENT_TRACE);
    // A sampled parent decides for itself (parent-based sampling): its
    // spans arrive, and nothing of the unsampled requests came before them.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, _) = ask(&gw, &chat("fast", false), Some(&sampled)).await;
    assert_eq!(status, 200);
    collector.trace(CLIENT_TRACE, 2).await;
    assert_eq!(collector.spans().len(), 2, "{:#?}", collector.spans());
}

#[tokio::test]
async fn a_collector_that_never_answers_slows_no_request_and_drops_are_counted() {
    let collector = Collector::start(Answer::Never).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let extra = "    timeout_ms: 60000\n    max_queue_size: 4\n";
    let gw = Gateway::start(&config(&first, &second, &otlp(&collector, extra))).await;
    // The first batch hangs on the collector for a minute; meanwhile the
    // queue (4 spans: two requests) fills and the rest is dropped.
    for _ in 0..12 {
        let (status, _) = ask(&gw, &chat("fast", false), None).await;
        assert_eq!(status, 200);
    }
    let m = gw
        .metrics_when("apiproxy_otlp_dropped_spans_total", &[], 2.0)
        .await;
    assert!(m.contains("apiproxy_otlp_dropped_spans_total"));
    assert_eq!(first.count(), 12);
}

#[tokio::test]
async fn without_telemetry_the_clients_traceparent_is_passed_on_as_it_came() {
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let cfg = config(&first, &second, "  capture_content: false");
    let gw = Gateway::start(&cfg).await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, _) = ask(&gw, &chat("fast", false), Some(&tp)).await;
    assert_eq!(status, 200);
    assert_eq!(first.last().header("traceparent"), Some(tp.as_str()));
    assert_eq!(first.last().header("tracestate"), Some("congo=t61rcWkgMzE"));
    assert!(!gw
        .metrics()
        .await
        .contains("apiproxy_otlp_dropped_spans_total"));
    let (status, _) = ask(&gw, &chat("fast", false), None).await;
    assert_eq!(status, 200);
    assert_eq!(first.last().header("traceparent"), None);
}

#[tokio::test]
async fn exported_over_grpc_with_the_configured_headers() {
    let collector = Collector::start_grpc().await;
    let first = MockProvider::always(Reply::json(500, r#"{"error":{"message":"down"}}"#)).await;
    let second = MockProvider::start(ok_mock()).await;
    let extra = "    protocol: grpc\n    headers: { x-collector-key: ck-grpc-0004 }\n";
    let gw = Gateway::start(&config(&first, &second, &otlp(&collector, extra))).await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, body) = ask(&gw, &chat("fast", false), Some(&tp)).await;
    assert_eq!(status, 200, "{body}");
    // The first provider failed: one span per attempt, then the request's.
    let spans = collector.trace(CLIENT_TRACE, 3).await;
    let server = server_span(&spans);
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.name, "chat fast");
    assert_eq!(
        attr(server, "gen_ai.request.model").as_deref(),
        Some("fast")
    );
    assert_eq!(attr(server, "apiproxy.attempts").as_deref(), Some("2"));
    let attempts = attempt_spans(&spans);
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        attr(attempts[0], "apiproxy.attempt.outcome").as_deref(),
        Some("5xx")
    );
    assert_eq!(
        attr(attempts[1], "apiproxy.attempt.outcome").as_deref(),
        Some("ok")
    );
    for a in &attempts {
        assert_eq!(a.parent_span_id, server.span_id);
    }
    let posts = collector.posts.lock().unwrap().clone();
    assert!(!posts.is_empty());
    assert!(
        posts
            .iter()
            .all(|(via, key)| via == "grpc" && key == "ck-grpc-0004"),
        "{posts:?}"
    );
    // The metadata's value is the collector's secret: never in the log.
    let log = gw.log();
    assert!(!log.contains("ck-grpc-0004"), "{log}");
}

/// A collector that answers every export with a redirect elsewhere: the
/// gateway must not follow it, or the configured headers (a collector's
/// credentials) would go to wherever the redirect points.
#[tokio::test]
async fn a_collectors_redirect_is_not_followed() {
    let elsewhere = Collector::start(Answer::Ok).await;
    let redirecting = Collector::start(Answer::Redirect(elsewhere.endpoint())).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let extra = "    headers: { x-collector-key: ck-redirect-0005 }\n";
    let gw = Gateway::start(&config(&first, &second, &otlp(&redirecting, extra))).await;
    let (status, _) = ask(&gw, &chat("fast", false), None).await;
    assert_eq!(status, 200);
    let (_, exported) = poll(
        WAIT,
        || async { redirecting.posts.lock().unwrap().len() },
        |n| *n > 0,
    )
    .await;
    assert!(exported, "no export reached the collector");
    // Followed, the export would reach `elsewhere` within milliseconds.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let posts = elsewhere.posts.lock().unwrap().clone();
    assert!(posts.is_empty(), "the redirect was followed: {posts:?}");
    assert!(!gw.log().contains("ck-redirect-0005"));
}

/// An OTLP/gRPC endpoint with a path is refused at load, naming the key.
#[tokio::test]
async fn a_grpc_endpoint_with_a_path_is_refused_at_load() {
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let telemetry =
        "  otlp:\n    endpoint: \"http://127.0.0.1:4317/v1/traces\"\n    protocol: grpc\n";
    let (ok, text) = check_config_text(&config(&first, &second, telemetry));
    assert!(!ok, "{text}");
    assert!(text.contains("telemetry.otlp.endpoint"), "{text}");
}

/// A process stopping (SIGTERM) exports the spans still queued before it
/// exits: the request answered just before the signal is in the collector
/// once the process is gone, though its batch had not waited its 0.5 s.
#[tokio::test]
async fn spans_queued_at_exit_are_exported_before_the_process_ends() {
    let collector = Collector::start(Answer::Ok).await;
    let first = MockProvider::start(ok_mock()).await;
    let second = MockProvider::start(ok_mock()).await;
    let server = "grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 0";
    let mut gw =
        Gateway::start_with_server(server, &config(&first, &second, &otlp(&collector, ""))).await;
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let (status, body) = ask(&gw, &chat("fast", false), Some(&tp)).await;
    assert_eq!(status, 200, "{body}");
    // The answer reaches the client before the request's logging phase,
    // which shelves its spans: its access line says that phase has run.
    gw.expect_log(" access] POST /v1/chat/completions").await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = gw.wait_exit(WAIT).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{}", gw.log());
    let spans = collector.spans();
    let ours = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == CLIENT_TRACE)
        .count();
    assert_eq!(ours, 2, "spans at exit: {spans:#?}\n{}", gw.log());
}

/// One traced gateway in front of a mock provider of every wire format
/// (`wire::provider_reply`: the providers' true answers; a model ending in
/// `-length` is cut by the token limit, one ending in `-cut` breaks its
/// stream), reachable as `via-{id}`, `long-{id}` and `cut-{id}`; `cached`
/// is `via-chat` with the response cache.
struct EveryWire {
    _mocks: Vec<MockProvider>,
    gw: Gateway,
    collector: Collector,
}

const WIRES: [(&str, wire::Wire); 4] = [
    ("chat", wire::Wire::Chat),
    ("resp", wire::Wire::Responses),
    ("anth", wire::Wire::Anthropic),
    ("gem", wire::Wire::Gemini),
];

impl EveryWire {
    async fn start() -> EveryWire {
        let collector = Collector::start(Answer::Ok).await;
        let mut mocks = Vec::new();
        let mut cfg = format!(
            "auth:\n  keys:\n    - {{ name: alice, key: {ALICE} }}\ntelemetry:\n{}providers:\n",
            otlp(&collector, "")
        );
        for (id, w) in WIRES {
            let m = MockProvider::start(move |rec, _| wire::provider_reply(w, rec)).await;
            let (kind, wire_api) = match w {
                wire::Wire::Chat => ("openai", ""),
                wire::Wire::Responses => ("openai", ", wire_api: responses"),
                wire::Wire::Anthropic => ("anthropic", ""),
                wire::Wire::Gemini => ("gemini", ""),
            };
            cfg += &format!(
                "  - {{ id: {id}, kind: {kind}{wire_api}, base_url: \"{}\", api_keys: [\"{PROVIDER_KEY}\"], models: [m, m-length, m-cut] }}\n",
                m.base_url()
            );
            mocks.push(m);
        }
        cfg += "models:\n";
        for (id, _) in WIRES {
            for (name, model) in [("via", "m"), ("long", "m-length"), ("cut", "m-cut")] {
                cfg += &format!(
                    "  - name: {name}-{id}\n    upstreams: [{{ provider: {id}, model: {model} }}]\n"
                );
            }
        }
        cfg += "  - name: cached\n    cache_ttl_seconds: 600\n    upstreams: [{ provider: chat, model: m }]\n";
        let gw = Gateway::start(&cfg).await;
        EveryWire {
            _mocks: mocks,
            gw,
            collector,
        }
    }

    /// Sends `client`'s request for `model` in trace `n` (the trace id is
    /// `n` in hex): the client's answer as [`wire::send_to`] read it.
    async fn send(
        &self,
        n: u32,
        client: wire::Wire,
        model: &str,
        scenario: wire::Scenario,
        stream: bool,
    ) -> (u16, String, String) {
        let mut req = wire::client_request(client, model, scenario, stream, ALICE);
        req.headers.push((
            "traceparent".into(),
            format!("00-{}-{CLIENT_SPAN}-01", trace_id(n)),
        ));
        wire::send_to(&self.gw, &req).await
    }

    /// The server span's `gen_ai.response.finish_reasons` in trace `n`,
    /// once its `spans` spans arrived (the request's and its attempts').
    async fn finish_reasons(&self, n: u32, spans: usize) -> Option<String> {
        let spans = self.collector.trace(&trace_id(n), spans).await;
        attr(server_span(&spans), "gen_ai.response.finish_reasons")
    }
}

fn trace_id(n: u32) -> String {
    format!("{:032x}", 0xf1_0000 + n)
}

/// Same format (the answer relayed as it came: a whole body, or a stream
/// passed through event by event) and translated (every other client in
/// front of every upstream), whole and streamed, a text answer and a tool
/// call: the request's span names the finish reason the client got.
#[tokio::test]
async fn the_span_names_the_finish_reason_the_client_got_on_every_path() {
    let env = EveryWire::start().await;
    let mut sent = Vec::new();
    let mut n = 0;
    for (id, upstream) in WIRES {
        for (_, client) in WIRES {
            for scenario in [wire::Scenario::Text, wire::Scenario::Tool] {
                for stream in [false, true] {
                    n += 1;
                    let model = format!("via-{id}");
                    let got = env.send(n, client, &model, scenario, stream).await;
                    let answer = wire::read_ok_answer(client, stream, &got);
                    let what = format!(
                        "{client:?} client, {upstream:?} upstream, {scenario:?}, stream={stream}"
                    );
                    assert_eq!(
                        answer.finish,
                        wire::expected_finish(client, scenario.shape()),
                        "{what}"
                    );
                    sent.push((n, what, answer.finish));
                }
            }
        }
    }
    for (n, what, finish) in &sent {
        assert_eq!(
            env.finish_reasons(*n, 2).await.as_deref(),
            Some(finish.as_str()),
            "trace {n}: {what}"
        );
    }
    // The ones this issue asked for, by name.
    let named = |client, upstream, scenario, stream| {
        let what =
            format!("{client:?} client, {upstream:?} upstream, {scenario:?}, stream={stream}");
        sent.iter()
            .find(|(_, w, _)| *w == what)
            .map(|(_, _, f)| f.as_str())
            .expect("sent")
    };
    use wire::{Scenario::*, Wire::*};
    assert_eq!(named(Chat, Chat, Text, true), "stop");
    assert_eq!(named(Chat, Chat, Text, false), "stop");
    assert_eq!(named(Chat, Chat, Tool, false), "tool_calls");
    assert_eq!(named(Anthropic, Chat, Text, true), "end_turn");
    assert_eq!(named(Anthropic, Chat, Tool, true), "tool_use");
}

/// The token limit's reason passed through and translated; a stream cut
/// short and a refused request have none; a response-cache hit has the
/// cached answer's, whole or streamed.
#[tokio::test]
async fn finish_reasons_of_a_cut_answer_a_cut_stream_and_a_cache_hit() {
    use wire::{Scenario::Text, Wire::*};
    let env = EveryWire::start().await;
    // (trace, client, model, stream, spans: the request's and its
    // attempts', reason). `cached` misses once per client format, then
    // hits (no attempt), whole or streamed.
    let cases = [
        (1, Chat, "long-chat", true, 2, Some("length")),
        (2, Anthropic, "long-chat", false, 2, Some("max_tokens")),
        (3, Gemini, "long-anth", true, 2, Some("MAX_TOKENS")),
        (4, Anthropic, "long-anth", true, 2, Some("max_tokens")),
        (5, Chat, "cut-chat", true, 2, None),
        (6, Anthropic, "cut-chat", true, 2, None),
        (7, Chat, "cached", false, 2, Some("stop")),
        (8, Anthropic, "cached", false, 2, Some("end_turn")),
        (9, Anthropic, "cached", true, 1, Some("end_turn")),
        (10, Chat, "cached", true, 1, Some("stop")),
    ];
    for (n, client, model, stream, spans, want) in cases {
        let (status, _, body) = env.send(n, client, model, Text, stream).await;
        assert_eq!(status, 200, "{model}: {body}");
        assert_eq!(
            env.finish_reasons(n, spans).await.as_deref(),
            want,
            "{client:?} {model} stream={stream}: {body}"
        );
    }
    for n in [9, 10] {
        let spans = env.collector.trace(&trace_id(n), 1).await;
        let server = server_span(&spans);
        assert_eq!(attr(server, "apiproxy.cache").as_deref(), Some("hit"));
    }
}
