//! Google OAuth access tokens from a service account (RFC 7523): a JWT
//! signed with the account's key (RS256) is exchanged at the token
//! endpoint; the token is cached per provider, shared by its requests and
//! fetched again before it expires, one fetch at a time.
//!
//! The token endpoint is reached like a provider of its own (its address,
//! the vertex provider's timeouts, CA and outbound proxy), through the
//! same HTTP exchange as every upstream request (`upstream/http.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use serde_json::Value;

use super::Credential;
use crate::config::vertex::{ServiceAccount, VertexAuth};
use crate::config::ProviderConfig;
use crate::upstream::http::{self, Outgoing, SendError, SendKind};
use crate::upstream::Provider;

/// What the tokens are for: the Vertex AI API.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The JWT's lifetime (Google accepts at most an hour).
const ASSERTION_LIFETIME_S: u64 = 3600;

/// A token is fetched again this long before it expires, or halfway
/// through its life when that is shorter.
const REFRESH_EARLY: Duration = Duration::from_secs(300);

/// Largest token-endpoint answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A provider's access tokens.
pub struct AccessTokens {
    provider: String,
    settings: Arc<crate::config::vertex::VertexSettings>,
    /// The token endpoint, reached as a provider of its own.
    endpoint: Provider,
    current: ArcSwapOption<Cached>,
    /// Held while a token is fetched: who comes meanwhile waits for it.
    refresh: tokio::sync::Mutex<()>,
    /// The last fetch's failure: repeated without asking again for
    /// [`FAILURE_HOLD`], so that requests do not queue up behind one
    /// unreachable token endpoint each.
    failed: parking_lot::Mutex<Option<(Instant, String)>>,
}

/// How long a failed fetch is the answer of every request.
const FAILURE_HOLD: Duration = Duration::from_secs(2);

/// A token and when to fetch the next.
struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
}

impl std::fmt::Debug for AccessTokens {
    /// The token is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokens")
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    /// The tokens of `config`'s service account; `None` without one.
    pub fn new(config: &ProviderConfig) -> Option<Self> {
        let settings = Arc::clone(config.vertex.as_ref()?);
        let VertexAuth::ServiceAccount(account) = &settings.auth else {
            return None;
        };
        let mut ep = config.clone();
        ep.id = format!("{} token endpoint", config.id);
        ep.base = account.token_endpoint.clone();
        // Nothing of the provider's own requests goes to the token
        // endpoint; without settings it has no credential of its own.
        ep.headers.clear();
        ep.api_keys.clear();
        ep.vertex = None;
        ep.read_timeout = ep.read_timeout.min(Duration::from_secs(30));
        Some(AccessTokens {
            provider: config.id.clone(),
            endpoint: Provider::new(ep),
            settings,
            current: ArcSwapOption::empty(),
            refresh: tokio::sync::Mutex::new(()),
            failed: parking_lot::Mutex::new(None),
        })
    }

    fn account(&self) -> Option<&ServiceAccount> {
        match &self.settings.auth {
            VertexAuth::ServiceAccount(a) => Some(a),
            VertexAuth::Token(_) => None,
        }
    }

    /// The cached token, while it is fresh.
    fn fresh(&self) -> Option<Arc<str>> {
        self.current
            .load()
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| Arc::clone(&c.token))
    }

    /// A failure of the last [`FAILURE_HOLD`].
    fn recent_failure(&self) -> Option<SendError> {
        let failed = self.failed.lock();
        let (at, why) = failed.as_ref()?;
        (at.elapsed() < FAILURE_HOLD).then(|| token_error(why))
    }

    /// Signs a JWT and exchanges it for a token. `Err` says why not, in
    /// words free of the token, the key and the assertion.
    async fn fetch(&self, connector: &Connector) -> Result<Cached, String> {
        let account = self.account().ok_or("no service account")?;
        let assertion = assertion(account, unix_now())?;
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        );
        let path = match account.token_endpoint.path.as_str() {
            "" => "/",
            p => p,
        };
        let started = Instant::now();
        let mut resp = http::send(
            connector,
            &self.endpoint,
            Outgoing {
                method: "POST",
                path,
                body: Bytes::from(body),
                stream: false,
                headers: vec![(
                    "content-type",
                    "application/x-www-form-urlencoded".to_owned(),
                )],
                edits: None,
            },
        )
        .await
        .map_err(|e| format!("token endpoint: {e}"))?;
        let status = resp.status();
        let answer = resp.body(MAX_ANSWER).await;
        resp.release(connector).await;
        let answer = answer.map_err(|e| format!("token endpoint: {e}"))?;
        let (token, lifetime) = read_answer(status, &answer)?;
        log::info!(
            "provider {}: access token fetched, valid {} s",
            self.provider,
            lifetime.as_secs()
        );
        let early = REFRESH_EARLY.min(lifetime / 2);
        Ok(Cached {
            token,
            refresh_at: started + lifetime - early,
        })
    }
}

#[async_trait::async_trait]
impl Credential for AccessTokens {
    async fn token(&self, connector: &Connector) -> Result<Arc<str>, SendError> {
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        if let Some(e) = self.recent_failure() {
            return Err(e);
        }
        let _one_at_a_time = self.refresh.lock().await;
        // Fetched (or failed) meanwhile by the request that held the lock.
        if let Some(t) = self.fresh() {
            return Ok(t);
        }
        if let Some(e) = self.recent_failure() {
            return Err(e);
        }
        match self.fetch(connector).await {
            Ok(cached) => {
                let token = Arc::clone(&cached.token);
                self.current.store(Some(Arc::new(cached)));
                *self.failed.lock() = None;
                Ok(token)
            }
            Err(why) => {
                log::warn!("provider {}: no access token: {why}", self.provider);
                let e = token_error(&why);
                *self.failed.lock() = Some((Instant::now(), why));
                Err(e)
            }
        }
    }
}

/// A failure to get a token: the attempt fails as if the provider could
/// not be reached (so the next upstream is tried). Its words never hold
/// the token, the key or the assertion.
fn token_error(detail: &str) -> SendError {
    SendError::new(SendKind::Connect, format!("no access token: {detail}"))
}

/// The JWT asking for a token, signed with the account's key.
fn assertion(account: &ServiceAccount, now: u64) -> Result<String, String> {
    #[derive(serde::Serialize)]
    struct Claims<'a> {
        iss: &'a str,
        scope: &'a str,
        aud: &'a str,
        iat: u64,
        exp: u64,
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid.clone_from(&account.key_id);
    let claims = Claims {
        iss: &account.client_email,
        scope: SCOPE,
        aud: &account.audience,
        iat: now,
        exp: now + ASSERTION_LIFETIME_S,
    };
    jsonwebtoken::encode(&header, &claims, &account.key)
        .map_err(|e| format!("signing the JWT failed: {e}"))
}

/// The token and its lifetime in a token endpoint's answer; `Err` says
/// why there is none (the answer's `error` code, never its text).
fn read_answer(status: u16, body: &[u8]) -> Result<(Arc<str>, Duration), String> {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    if status != 200 {
        // OAuth's error codes are a fixed set (`invalid_grant`, ...).
        let code = v
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .filter(|c| c.len() <= 40 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        return Err(match code {
            Some(c) => format!("token endpoint answered {status} ({c})"),
            None => format!("token endpoint answered {status}"),
        });
    }
    let v = v.ok_or("token endpoint's answer is not JSON")?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && ::http::HeaderValue::from_str(t).is_ok())
        .ok_or("token endpoint's answer has no access_token")?;
    let lifetime = v
        .get("expires_in")
        .and_then(Value::as_u64)
        .ok_or("token endpoint's answer has no expires_in")?;
    Ok((Arc::from(token), Duration::from_secs(lifetime)))
}

fn unix_now() -> u64 {
    crate::upstream::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_answers() {
        let (t, life) = read_answer(
            200,
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!((&*t, life), ("ya29.x", Duration::from_secs(3599)));
        assert_eq!(
            read_answer(
                400,
                br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#
            ),
            Err("token endpoint answered 400 (invalid_grant)".to_owned())
        );
        assert_eq!(
            read_answer(500, b"<html>"),
            Err("token endpoint answered 500".to_owned())
        );
        assert!(read_answer(200, br#"{"expires_in":1}"#).is_err());
        assert!(read_answer(200, br#"{"access_token":"a\nb","expires_in":1}"#).is_err());
        assert!(read_answer(200, br#"{"access_token":"a"}"#).is_err());
    }
}
