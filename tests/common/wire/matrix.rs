//! One gateway in front of one mock provider per listed upstream, each
//! reachable as the logical model `via-{id}`: the set-up the per-feature
//! matrices (reasoning, structured output) share.

use super::{ClientRequest, Wire};
use crate::common::{Gateway, MockProvider, Recorded, Reply};

/// The gateway and its mocks, by provider id.
pub struct Matrix {
    pub mocks: Vec<(&'static str, MockProvider)>,
    pub gw: Gateway,
}

impl Matrix {
    /// Starts a mock per `(id, kind, upstream model)` answering with
    /// `reply`, and a gateway that needs `client_key`.
    pub async fn start(
        providers: &[(&'static str, Wire, &'static str)],
        reply: fn(Wire, &Recorded) -> Reply,
        client_key: &str,
    ) -> Matrix {
        let mut mocks = Vec::new();
        let mut cfg =
            format!("auth:\n  keys:\n    - {{ name: tester, key: {client_key} }}\nproviders:\n");
        for &(id, k, model) in providers {
            let m = MockProvider::start(move |rec, _| reply(k, rec)).await;
            let (kind, wire_api) = match k {
                Wire::Chat => ("openai", ""),
                Wire::Responses => ("openai", ", wire_api: responses"),
                Wire::Anthropic => ("anthropic", ""),
                Wire::Gemini => ("gemini", ""),
            };
            cfg += &format!(
                "  - {{ id: {id}, kind: {kind}{wire_api}, base_url: \"{}\", api_keys: [\"k-{id}\"], models: [{model}] }}\n",
                m.base_url()
            );
            mocks.push((id, m));
        }
        cfg += "models:\n";
        for (id, _, model) in providers {
            cfg += &format!(
                "  - name: via-{id}\n    upstreams: [{{ provider: {id}, model: {model} }}]\n"
            );
        }
        let gw = Gateway::start(&cfg).await;
        Matrix { mocks, gw }
    }

    /// The mock of provider `id`.
    pub fn mock(&self, id: &str) -> &MockProvider {
        &self.mocks.iter().find(|(i, _)| *i == id).expect("mock").1
    }

    /// Sends a client's request as its SDK would: the answer's status and body.
    pub async fn send(&self, req: &ClientRequest) -> (u16, String) {
        let (status, _, body) = super::send_to(&self.gw, req).await;
        (status, body)
    }
}
