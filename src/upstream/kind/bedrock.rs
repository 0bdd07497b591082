//! `kind: bedrock`: AWS Bedrock's Converse API
//! (`POST /model/{modelId}/converse`, `/converse-stream`), one request
//! shape for every model on Bedrock. Requests are signed with AWS
//! Signature Version 4 (the AWS crates' signer; service `bedrock`) over the
//! request as sent: its method, path and query, `Host` and body.
//!
//! Credentials come from the config or the standard environment variables
//! (`config/providers.rs`); web-identity and instance-profile credentials
//! are not supported. The models are configured: Bedrock's model list
//! (ListFoundationModels) is on another host, the control plane.

use std::time::SystemTime;

use apiproxy_translate::Format;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use serde_json::Value;

use super::{encode_segment, listed_ids, Kind, Signable};
use crate::config::ProviderConfig;
use crate::upstream::ratelimit::{RateLimitHeaders, NO_HEADERS};

/// AWS Bedrock.
#[derive(Debug)]
pub struct Bedrock;

/// The SigV4 signing name of Bedrock's APIs.
const SERVICE: &str = "bedrock";

impl Kind for Bedrock {
    /// `model` is a model id (`anthropic.claude-3-5-sonnet-20240620-v1:0`),
    /// an inference profile (`us.anthropic.claude-...`) or an ARN: one
    /// path segment, percent-encoded.
    fn request_path(
        &self,
        config: &ProviderConfig,
        _wire: Format,
        model: &str,
        stream: bool,
    ) -> String {
        let action = if stream {
            "converse-stream"
        } else {
            "converse"
        };
        format!(
            "{}/model/{}/{action}",
            config.base.path,
            encode_segment(model)
        )
    }

    /// ListFoundationModels' path (on the control-plane host, which the
    /// gateway does not call: a bedrock provider's models are configured
    /// and it has no health checks).
    fn list_path(&self, config: &ProviderConfig) -> String {
        match &config.models_path {
            Some(p) => p.clone(),
            None => format!("{}/foundation-models", config.base.path),
        }
    }

    fn parse_model_list(&self, body: &Value) -> Result<Vec<String>, String> {
        listed_ids(body, "modelSummaries", "modelId")
    }

    /// Nothing: the request is signed instead ([`Kind::sign`]).
    fn auth_headers(
        &self,
        _config: &ProviderConfig,
        _key: Option<&str>,
        _out: &mut Vec<(&'static str, String)>,
    ) {
    }

    /// Bedrock sends no rate-limit headers; its throttling is a 429.
    fn ratelimit_headers(&self) -> &'static RateLimitHeaders {
        &NO_HEADERS
    }

    fn sign(
        &self,
        config: &ProviderConfig,
        req: &Signable<'_>,
        out: &mut Vec<(&'static str, String)>,
    ) -> Result<(), String> {
        let (Some(aws), Some(region)) = (&config.aws, config.region.as_deref()) else {
            // The config refuses a bedrock provider without them.
            return Err("no AWS credentials or region".to_owned());
        };
        let identity = Credentials::new(
            &aws.access_key_id,
            &aws.secret_access_key,
            aws.session_token.clone(),
            None,
            "apiproxy-config",
        )
        .into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name(SERVICE)
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("signing parameters: {e}"))?
            .into();
        let scheme = if req.tls { "https" } else { "http" };
        // Signed over the Host header as sent (the URI's authority).
        let uri = format!("{scheme}://{}{}", req.host, req.path);
        let signable = SignableRequest::new(
            req.method,
            uri,
            std::iter::empty(),
            SignableBody::Bytes(req.body),
        )
        .map_err(|e| format!("request cannot be signed: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("signing: {e}"))?
            .into_parts();
        let (headers, _params) = instructions.into_parts();
        for h in headers {
            out.push((h.name(), h.value().to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config() -> ProviderConfig {
        let yaml = "providers: [{id: b, kind: bedrock, region: us-west-2, access_key_id: AKIDEXAMPLE, secret_access_key: secret, models: ['us.anthropic.claude-3-5-haiku-20241022-v1:0']}]";
        Config::from_yaml(yaml, &|_| None)
            .unwrap()
            .providers
            .remove(0)
    }

    #[test]
    fn paths_and_default_endpoint() {
        let c = config();
        assert_eq!(c.base.host, "bedrock-runtime.us-west-2.amazonaws.com");
        assert!(c.base.tls);
        assert_eq!(
            Bedrock.request_path(
                &c,
                c.format,
                "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                false
            ),
            "/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
        );
        assert_eq!(
            Bedrock.request_path(
                &c,
                c.format,
                "arn:aws:bedrock:us-west-2:1:inference-profile/x",
                true
            ),
            "/model/arn%3Aaws%3Abedrock%3Aus-west-2%3A1%3Ainference-profile%2Fx/converse-stream"
        );
    }

    #[test]
    fn signature_names_the_credentials_scope_and_host() {
        let c = config();
        let mut out = Vec::new();
        let req = Signable {
            method: "POST",
            tls: true,
            host: "bedrock-runtime.us-west-2.amazonaws.com",
            path: "/model/m/converse",
            body: b"{}",
        };
        Bedrock.sign(&c, &req, &mut out).unwrap();
        let auth = &out.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"),
            "{auth}"
        );
        assert!(auth.contains("/us-west-2/bedrock/aws4_request"), "{auth}");
        assert!(auth.contains("SignedHeaders=host;x-amz-date"), "{auth}");
        assert!(!auth.contains("secret"));
        assert!(out.iter().any(|(k, _)| *k == "x-amz-date"));
    }
}
