//! `kind: vertex`'s own settings: the Google Cloud project and location,
//! which publisher serves a model (Google's Gemini or Anthropic's Claude),
//! and how the provider authenticates (a service account, or a static
//! access token).

use std::fmt;
use std::sync::Arc;

use super::base_url::{parse_base_url, BaseUrl};
pub use super::choices::Publisher;
use super::choices::{Choice, ProviderKind};
use super::raw::RawProvider;

/// Google's OAuth token endpoint, when the service account names none.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// A `kind: vertex` provider's settings.
#[derive(Debug)]
pub struct VertexSettings {
    /// The Google Cloud project id.
    pub project: String,
    /// The region (`us-central1`, ...) or `global`.
    pub location: String,
    /// `publisher`: every model's publisher; `None`: chosen by the model's
    /// name (`claude-*`: Anthropic, the rest Google).
    pub publisher: Option<Publisher>,
    pub auth: VertexAuth,
}

impl VertexSettings {
    /// The publisher serving upstream model `model`.
    pub fn publisher_of(&self, model: &str) -> Publisher {
        self.publisher.unwrap_or(if model.starts_with("claude") {
            Publisher::Anthropic
        } else {
            Publisher::Google
        })
    }
}

/// How a vertex provider authenticates.
#[derive(Debug)]
pub enum VertexAuth {
    /// A service account: a signed JWT exchanged for access tokens.
    ServiceAccount(ServiceAccount),
    /// `access_token`: a bearer token used as given.
    Token(String),
}

/// The parts of a service-account JSON key the gateway uses.
pub struct ServiceAccount {
    /// `client_email`: the JWT's issuer.
    pub client_email: String,
    /// `private_key`, parsed: signs the JWT (RS256).
    pub key: Arc<jsonwebtoken::EncodingKey>,
    /// `private_key_id`: the JWT header's `kid`.
    pub key_id: Option<String>,
    /// Where the JWT is exchanged: `token_url`, else the JSON's
    /// `token_uri`, else Google's.
    pub token_endpoint: BaseUrl,
    /// `token_uri` as written (the JWT's audience).
    pub audience: String,
}

impl fmt::Debug for ServiceAccount {
    /// The private key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_endpoint", &self.token_endpoint)
            .finish_non_exhaustive()
    }
}

/// The service-account JSON as Google issues it (other fields ignored).
#[derive(serde::Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

/// The default base URL of `location`'s endpoint.
pub fn default_base_url(location: &str) -> String {
    if location == "global" {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

/// A project or location goes into the path as written: letters, digits,
/// '-', '_' and '.' only.
fn path_safe(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Resolves the vertex settings of provider `p` (`kind`), reporting the
/// vertex keys given to another kind, and gives `p` the location's
/// `base_url` when it has none. `secrets` gets every credential.
pub fn resolve(
    at: &str,
    kind: ProviderKind,
    p: &mut RawProvider,
    secrets: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Option<Arc<VertexSettings>> {
    if kind != ProviderKind::Vertex {
        let given = [
            ("project", p.project.is_some()),
            ("location", p.location.is_some()),
            ("publisher", p.publisher.is_some()),
            ("credentials_file", p.credentials_file.is_some()),
            ("credentials_json", p.credentials_json.is_some()),
            ("access_token", p.access_token.is_some()),
            ("token_url", p.token_url.is_some()),
        ];
        for (key, _) in given.iter().filter(|(_, set)| *set) {
            problems.push(format!("{at}.{key}: only for kind vertex"));
        }
        return None;
    }
    let before = problems.len();
    let mut named = |key: &str, v: &Option<String>| match v {
        Some(s) if path_safe(s) => s.clone(),
        Some(s) => {
            problems.push(format!(
                "{at}.{key}: {s:?} is not a {key} id (letters, digits, '-', '_', '.')"
            ));
            String::new()
        }
        None => {
            problems.push(format!("{at}.{key}: kind vertex needs it"));
            String::new()
        }
    };
    let project = named("project", &p.project);
    let location = named("location", &p.location);
    let publisher = match p.publisher.as_ref().map(Choice::value) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            problems.push(format!("{at}.publisher: {e}"));
            None
        }
    };
    if !p.api_keys.is_empty() {
        problems.push(format!(
            "{at}.api_keys: kind vertex authenticates with credentials_file, credentials_json or access_token"
        ));
    }
    if p.models.is_none() {
        problems.push(format!(
            "{at}.models: kind vertex needs its models listed (Vertex AI has no list of a project's publisher models)"
        ));
    }
    let auth = auth(at, p, secrets, problems);
    if problems.len() > before {
        return None;
    }
    if p.base_url.is_none() {
        p.base_url = Some(default_base_url(&location));
    }
    Some(Arc::new(VertexSettings {
        project,
        location,
        publisher,
        auth: auth?,
    }))
}

/// Exactly one of `credentials_file`, `credentials_json`, `access_token`.
fn auth(
    at: &str,
    p: &RawProvider,
    secrets: &mut Vec<String>,
    problems: &mut Vec<String>,
) -> Option<VertexAuth> {
    let json = match (&p.credentials_file, &p.credentials_json, &p.access_token) {
        (Some(path), None, None) => match std::fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{at}.credentials_file: cannot read {path}: {e}"));
                return None;
            }
        },
        (None, Some(json), None) => json.clone(),
        (None, None, Some(token)) if !token.is_empty() => {
            secrets.push(token.clone());
            return Some(VertexAuth::Token(token.clone()));
        }
        (None, None, None) | (None, None, Some(_)) => {
            problems.push(format!(
                "{at}: kind vertex needs credentials_file, credentials_json or access_token"
            ));
            return None;
        }
        _ => {
            problems.push(format!(
                "{at}: give one of credentials_file, credentials_json and access_token"
            ));
            return None;
        }
    };
    let key_at = if p.credentials_file.is_some() {
        format!("{at}.credentials_file")
    } else {
        format!("{at}.credentials_json")
    };
    // The problem never quotes the JSON: it holds the private key.
    let file: KeyFile = match serde_json::from_str(&json) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!(
                "{key_at}: not a service-account JSON key (line {}, column {})",
                e.line(),
                e.column()
            ));
            return None;
        }
    };
    secrets.push(file.private_key.clone());
    if file.kind.as_deref().is_some_and(|k| k != "service_account") {
        problems.push(format!("{key_at}: not a service account's key (type)"));
        return None;
    }
    let key = match jsonwebtoken::EncodingKey::from_rsa_pem(file.private_key.as_bytes()) {
        Ok(k) => k,
        Err(_) => {
            problems.push(format!("{key_at}: private_key is not an RSA key in PEM"));
            return None;
        }
    };
    let audience = file
        .token_uri
        .unwrap_or_else(|| GOOGLE_TOKEN_URI.to_owned());
    let endpoint = p.token_url.as_deref().unwrap_or(&audience);
    let token_endpoint = match parse_base_url(endpoint) {
        Ok(u) => u,
        Err(e) => {
            let key = if p.token_url.is_some() {
                "token_url"
            } else {
                "credentials: token_uri"
            };
            problems.push(format!("{at}.{key}: {e}"));
            return None;
        }
    };
    Some(VertexAuth::ServiceAccount(ServiceAccount {
        client_email: file.client_email,
        key: Arc::new(key),
        key_id: file.private_key_id,
        token_endpoint,
        audience,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// A throwaway key made for the tests (`tests/fixtures`).
    const KEY: &str = include_str!("../../tests/fixtures/vertex_test_key.pem");

    fn key_json(token_uri: &str) -> String {
        serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid1",
            "private_key": KEY,
            "client_email": "gw@p.iam.gserviceaccount.com",
            "token_uri": token_uri,
        })
        .to_string()
    }

    fn problems(yaml: &str, vars: &[(&str, String)]) -> Vec<String> {
        let get = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        match Config::from_yaml(yaml, &get) {
            Ok(_) => Vec::new(),
            Err(p) => p,
        }
    }

    #[test]
    fn a_service_account_from_json() {
        let vars = [("SA", key_json("https://oauth2.googleapis.com/token"))];
        let yaml = "providers: [{id: vx, kind: vertex, project: p, location: europe-west4, credentials_json: '${SA}', token_url: 'http://127.0.0.1:9/tok', models: [g]}]";
        let get = |n: &str| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        let c = Config::from_yaml(yaml, &get).unwrap().providers.remove(0);
        let v = c.vertex.as_deref().unwrap();
        let VertexAuth::ServiceAccount(sa) = &v.auth else {
            panic!("a service account")
        };
        assert_eq!(sa.client_email, "gw@p.iam.gserviceaccount.com");
        assert_eq!(sa.audience, "https://oauth2.googleapis.com/token");
        assert_eq!(sa.token_endpoint.host, "127.0.0.1");
        assert_eq!(sa.token_endpoint.path, "/tok");
        assert_eq!(sa.key_id.as_deref(), Some("kid1"));
        assert!(c.secrets.iter().any(|s| s.contains("PRIVATE KEY")));
        assert!(!format!("{v:?}").contains("PRIVATE KEY"));
        assert_eq!(c.base.host, "europe-west4-aiplatform.googleapis.com");
    }

    #[test]
    fn what_is_wrong_is_said() {
        let p = problems(
            "providers: [{id: vx, kind: vertex, location: 'us/x', access_token: t}]",
            &[],
        );
        assert!(
            p.iter()
                .any(|p| p.contains("providers[0].project: kind vertex needs it")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("providers[0].location: \"us/x\"")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("providers[0].models: kind vertex needs")),
            "{p:?}"
        );
        let p = problems(
            "providers: [{id: vx, kind: vertex, project: p, location: l, models: [m]}]",
            &[],
        );
        assert!(
            p.iter()
                .any(|p| p.contains("needs credentials_file, credentials_json or access_token")),
            "{p:?}"
        );
        let p = problems(
            "providers: [{id: vx, kind: vertex, project: p, location: l, models: [m], access_token: t, credentials_json: '{}'}]",
            &[],
        );
        assert!(p.iter().any(|p| p.contains("give one of")), "{p:?}");
        // A broken key is named, never quoted.
        let bad = key_json("https://x/token").replace("MII", "XXX");
        let p = problems(
            "providers: [{id: vx, kind: vertex, project: p, location: l, models: [m], credentials_json: '${SA}'}]",
            &[("SA", bad)],
        );
        assert!(
            p.iter()
                .any(|p| p.contains("private_key is not an RSA key")),
            "{p:?}"
        );
        assert!(!p.iter().any(|p| p.contains("PRIVATE")), "{p:?}");
        let p = problems(
            "providers: [{id: vx, kind: vertex, project: p, location: l, models: [m], credentials_file: /nonexistent/sa.json}]",
            &[],
        );
        assert!(
            p.iter()
                .any(|p| p.contains("credentials_file: cannot read")),
            "{p:?}"
        );
        let p = problems(
            "providers: [{id: g, kind: gemini, base_url: 'http://h', project: p, access_token: t}]",
            &[],
        );
        assert!(
            p.iter()
                .any(|p| p.contains("providers[0].project: only for kind vertex")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|p| p.contains("providers[0].access_token: only for kind vertex")),
            "{p:?}"
        );
    }
}
