//! The `telemetry` section: where request traces go (`telemetry.otlp`),
//! how many are sampled, and whether they carry content.

use std::time::Duration;

use super::choices::{Choice, OtlpProtocol};
use super::raw::{RawOtlp, RawTelemetry};

/// `telemetry.otlp.max_queue_size` by default.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 2048;
/// `telemetry.otlp.timeout_ms` by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest queue accepted: a span is a few hundred bytes to a few KiB.
const MAX_QUEUE_SIZE: usize = 1 << 20;

/// The traces' settings. Read at start: a reload keeps the exporter the
/// process started with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TelemetrySettings {
    /// `None`: no tracing at all.
    pub otlp: Option<OtlpSettings>,
    /// Spans carry the prompt and the answer, redacted.
    pub capture_content: bool,
}

/// The OTLP exporter's settings.
#[derive(Clone, PartialEq)]
pub struct OtlpSettings {
    /// The URL spans are posted to (with `/v1/traces`).
    pub traces_url: String,
    pub protocol: OtlpProtocol,
    /// Names checked as header names, values as header values.
    pub headers: Vec<(String, String)>,
    pub sample_ratio: f64,
    pub timeout: Duration,
    pub max_queue_size: usize,
}

impl std::fmt::Debug for OtlpSettings {
    // Header values are often a collector's API key: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("OtlpSettings")
            .field("traces_url", &self.traces_url)
            .field("protocol", &self.protocol)
            .field("headers", &names)
            .field("sample_ratio", &self.sample_ratio)
            .field("timeout", &self.timeout)
            .field("max_queue_size", &self.max_queue_size)
            .finish()
    }
}

/// Resolves `telemetry`; every problem is pushed naming its key path.
pub fn resolve(t: RawTelemetry, problems: &mut Vec<String>) -> TelemetrySettings {
    TelemetrySettings {
        otlp: t.otlp.and_then(|o| otlp(o, problems)),
        capture_content: t.capture_content.unwrap_or(false),
    }
}

fn otlp(o: RawOtlp, problems: &mut Vec<String>) -> Option<OtlpSettings> {
    let before = problems.len();
    let protocol = match o.protocol.as_ref().map(Choice::value) {
        None => OtlpProtocol::default(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            problems.push(format!("telemetry.otlp.protocol: {e}"));
            OtlpProtocol::default()
        }
    };
    let traces_url = match traces_url(&o.endpoint, protocol) {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("telemetry.otlp.endpoint: {e}"));
            String::new()
        }
    };
    for (name, value) in &o.headers {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(format!(
                "telemetry.otlp.headers: {name:?} is not a header name"
            ));
        } else if http::HeaderValue::from_str(value).is_err() {
            // The value is not echoed: it is often a secret.
            problems.push(format!(
                "telemetry.otlp.headers.{name}: not a valid header value"
            ));
        }
    }
    let sample_ratio = o.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        problems.push("telemetry.otlp.sample_ratio: must be between 0 and 1".to_owned());
    }
    let timeout = o.timeout_ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis);
    if timeout.is_zero() {
        problems.push("telemetry.otlp.timeout_ms: must be positive".to_owned());
    }
    let max_queue_size = o.max_queue_size.unwrap_or(DEFAULT_MAX_QUEUE_SIZE);
    if !(1..=MAX_QUEUE_SIZE).contains(&max_queue_size) {
        problems.push(format!(
            "telemetry.otlp.max_queue_size: must be between 1 and {MAX_QUEUE_SIZE}"
        ));
    }
    (problems.len() == before).then(|| OtlpSettings {
        traces_url,
        protocol,
        headers: o.headers.into_iter().collect(),
        sample_ratio,
        timeout,
        max_queue_size,
    })
}

/// The URL spans are posted to: over OTLP/HTTP the endpoint as given when
/// it names a path, else the endpoint with `/v1/traces` (as
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is read); over gRPC the endpoint, which
/// names no path (the service's is fixed).
fn traces_url(endpoint: &str, protocol: OtlpProtocol) -> Result<String, String> {
    let url = url::Url::parse(endpoint).map_err(|e| format!("{endpoint:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{endpoint:?} is not an http:// or https:// URL"));
    }
    let no_path = url.path() == "/" || url.path().is_empty();
    if protocol == OtlpProtocol::Grpc {
        return if no_path && url.query().is_none() {
            Ok(endpoint.trim_end_matches('/').to_owned())
        } else {
            Err(format!(
                "{endpoint:?}: an OTLP/gRPC endpoint is a scheme, host and port only (http://collector:4317)"
            ))
        };
    }
    if no_path {
        let base = endpoint.trim_end_matches('/');
        Ok(format!("{base}/v1/traces"))
    } else {
        Ok(endpoint.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_adds_the_signal_path_only_without_a_path() {
        let http = OtlpProtocol::HttpProtobuf;
        let u = |e| traces_url(e, http).unwrap();
        assert_eq!(u("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(u("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(u("https://c/otlp/v1/traces"), "https://c/otlp/v1/traces");
        assert!(traces_url("c:4318", http).is_err());
        assert!(traces_url("ftp://c/", http).is_err());
        assert!(traces_url("", http).is_err());
    }

    #[test]
    fn a_grpc_endpoint_is_taken_as_given_and_names_no_path() {
        let grpc = OtlpProtocol::Grpc;
        assert_eq!(traces_url("http://c:4317", grpc).unwrap(), "http://c:4317");
        assert_eq!(
            traces_url("https://c:4317/", grpc).unwrap(),
            "https://c:4317"
        );
        let e = traces_url("http://c:4317/v1/traces", grpc).unwrap_err();
        assert!(e.contains("scheme, host and port"), "{e}");
        assert!(traces_url("c:4317", grpc).is_err());
    }

    #[test]
    fn every_bad_value_is_named() {
        let raw = RawOtlp {
            endpoint: "nope".into(),
            headers: [("bad name".to_owned(), "v".to_owned())].into(),
            sample_ratio: Some(1.5),
            timeout_ms: Some(0),
            max_queue_size: Some(0),
            ..RawOtlp::default()
        };
        let mut problems = Vec::new();
        assert!(otlp(raw, &mut problems).is_none());
        for key in [
            "endpoint",
            "headers",
            "sample_ratio",
            "timeout_ms",
            "max_queue_size",
        ] {
            assert!(
                problems.iter().any(|p| p.contains(key)),
                "{key}: {problems:?}"
            );
        }
    }

    #[test]
    fn defaults() {
        let raw = RawOtlp {
            endpoint: "http://127.0.0.1:4318".into(),
            ..RawOtlp::default()
        };
        let mut problems = Vec::new();
        let s = otlp(raw, &mut problems).unwrap();
        assert!(problems.is_empty());
        assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(s.sample_ratio, 1.0);
        assert_eq!(s.timeout, DEFAULT_TIMEOUT);
        assert_eq!(s.max_queue_size, DEFAULT_MAX_QUEUE_SIZE);
    }
}
