//! Which handler a request goes to, from its method and path alone.

use apiproxy_translate::Format;

use super::responses::Action;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    /// `GET /v1/models`, `GET /models`.
    ListModels,
    /// A generation request in a client format. Gemini carries the model and
    /// whether to stream in the path.
    Llm {
        format: Format,
        path_model: Option<String>,
        path_stream: bool,
    },
    /// A token count in a client format: Anthropic
    /// `/v1/messages/count_tokens`, OpenAI `/v1/responses/input_tokens`,
    /// Gemini `models/{model}:countTokens`. Routed like a generation
    /// request of that format.
    CountTokens {
        format: Format,
        path_model: Option<String>,
    },
    /// `GET /context/{session}`.
    Context(String),
    /// `GET` / `DELETE /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`.
    Response(String, super::responses::Action),
    Admin(AdminRoute),
    /// The web console's pages and JSON API (`/ui/...`, `/admin/...`),
    /// routed further by the console itself.
    Console,
    NotFound,
    MethodNotAllowed,
}

impl Route {
    /// Whether the route belongs to the admin surface: the inspection
    /// endpoints, `/admin/...` and the console's pages. With
    /// `server.admin_listen` they are served only there.
    pub fn is_admin(&self) -> bool {
        matches!(self, Route::Admin(_) | Route::Console)
    }

    /// Whether the route belongs to the client surface (generation, model
    /// list); `/health` and `/context/{id}` belong to both.
    pub fn is_client(&self) -> bool {
        !self.is_admin()
    }
}

/// The admin endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRoute {
    Providers,
    Provider(String),
    ProviderModels(String),
    ProviderHealth(String),
    ProviderMetrics(String),
    LogicalModels,
    LogicalModel(String),
    LogicalModelUpstreams(String),
    Decide,
    GetSession(String),
    DeleteSession(String),
}

/// Routes `method` + `path` (without the query).
pub fn route(method: &str, path: &str) -> Route {
    let post = method == "POST";
    let get = method == "GET";
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let only = |ok: bool, r: Route| if ok { r } else { Route::MethodNotAllowed };
    // Gemini: the model may itself hold slashes (`provider-id/model`), as
    // the SDKs put any model name after `models/` unencoded.
    if let ["v1beta" | "v1", "models", _, ..] = segs.as_slice() {
        let rest = path
            .trim_matches('/')
            .splitn(3, '/')
            .nth(2)
            .unwrap_or_default();
        if let Some((model, action)) = rest.rsplit_once(':') {
            let stream = match action {
                "generateContent" => false,
                "streamGenerateContent" => true,
                "countTokens" => {
                    return only(
                        post,
                        Route::CountTokens {
                            format: Format::Gemini,
                            path_model: Some(model.to_owned()),
                        },
                    )
                }
                _ => return Route::NotFound,
            };
            return only(
                post,
                Route::Llm {
                    format: Format::Gemini,
                    path_model: Some(model.to_owned()),
                    path_stream: stream,
                },
            );
        }
    }
    match segs.as_slice() {
        ["health"] => only(get || method == "HEAD", Route::Health),
        ["v1", "models"] | ["models"] => only(get, Route::ListModels),
        ["v1", "chat", "completions"] | ["chat", "completions"] => {
            only(post, llm(Format::OpenAiChat))
        }
        ["v1", "responses"] | ["responses"] => only(post, llm(Format::OpenAiResponses)),
        ["v1", "messages"] => only(post, llm(Format::Anthropic)),
        ["v1", "messages", "count_tokens"] => only(post, count(Format::Anthropic)),
        ["v1", "responses", "input_tokens"] | ["responses", "input_tokens"] => {
            only(post, count(Format::OpenAiResponses))
        }
        ["v1", "responses", id] | ["responses", id] if get || method == "DELETE" => {
            let action = if get { Action::Get } else { Action::Delete };
            Route::Response((*id).to_owned(), action)
        }
        ["v1", "responses", id, "input_items"] | ["responses", id, "input_items"] => {
            only(get, Route::Response((*id).to_owned(), Action::InputItems))
        }
        ["context", id] if !id.is_empty() => only(get, Route::Context((*id).to_owned())),
        ["providers"] => only(get, Route::Admin(AdminRoute::Providers)),
        ["providers", id] => only(get, Route::Admin(AdminRoute::Provider((*id).to_owned()))),
        ["providers", id, "models"] => only(
            get,
            Route::Admin(AdminRoute::ProviderModels((*id).to_owned())),
        ),
        ["providers", id, "health"] => only(
            get,
            Route::Admin(AdminRoute::ProviderHealth((*id).to_owned())),
        ),
        ["providers", id, "metrics"] => only(
            get,
            Route::Admin(AdminRoute::ProviderMetrics((*id).to_owned())),
        ),
        ["ui", ..] | ["admin", ..] => Route::Console,
        ["logical-models"] => only(get, Route::Admin(AdminRoute::LogicalModels)),
        ["logical-models", id] => only(
            get,
            Route::Admin(AdminRoute::LogicalModel((*id).to_owned())),
        ),
        ["logical-models", id, "upstreams"] => only(
            get,
            Route::Admin(AdminRoute::LogicalModelUpstreams((*id).to_owned())),
        ),
        ["routing", "decide"] => only(post, Route::Admin(AdminRoute::Decide)),
        ["routing", "sessions", id] => match method {
            "GET" => Route::Admin(AdminRoute::GetSession((*id).to_owned())),
            "DELETE" => Route::Admin(AdminRoute::DeleteSession((*id).to_owned())),
            _ => Route::MethodNotAllowed,
        },
        _ => Route::NotFound,
    }
}

fn llm(format: Format) -> Route {
    Route::Llm {
        format,
        path_model: None,
        path_stream: false,
    }
}

fn count(format: Format) -> Route {
    Route::CountTokens {
        format,
        path_model: None,
    }
}

/// The client format an error on `path` should be shaped in.
pub fn error_format(path: &str) -> Format {
    if path.starts_with("/v1/responses") || path.starts_with("/responses") {
        Format::OpenAiResponses
    } else if path.starts_with("/v1/messages") {
        Format::Anthropic
    } else if path.contains(':')
        && [":generateContent", ":streamGenerateContent", ":countTokens"]
            .iter()
            .any(|a| path.contains(a))
    {
        Format::Gemini
    } else {
        Format::OpenAiChat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/health"), Route::Health);
        assert_eq!(route("GET", "/v1/models"), Route::ListModels);
        assert_eq!(
            route("POST", "/v1/chat/completions"),
            llm(Format::OpenAiChat)
        );
        assert_eq!(
            route("GET", "/v1/chat/completions"),
            Route::MethodNotAllowed
        );
        assert_eq!(route("POST", "/v1/messages"), llm(Format::Anthropic));
        assert_eq!(route("POST", "/v1/responses"), llm(Format::OpenAiResponses));
        assert_eq!(
            route(
                "POST",
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
            ),
            Route::Llm {
                format: Format::Gemini,
                path_model: Some("gemini-2.5-flash".into()),
                path_stream: true
            }
        );
        assert_eq!(
            route("POST", "/v1/models/fast:generateContent"),
            Route::Llm {
                format: Format::Gemini,
                path_model: Some("fast".into()),
                path_stream: false
            }
        );
        assert_eq!(
            route("POST", "/v1beta/models/x:embedContent"),
            Route::NotFound
        );
        assert_eq!(
            route("POST", "/v1beta/models/gem/gemini-2.5-pro:generateContent"),
            Route::Llm {
                format: Format::Gemini,
                path_model: Some("gem/gemini-2.5-pro".into()),
                path_stream: false
            }
        );
        assert_eq!(
            route("POST", "/v1/messages/count_tokens"),
            count(Format::Anthropic)
        );
        assert_eq!(
            route("POST", "/v1/responses/input_tokens"),
            count(Format::OpenAiResponses)
        );
        assert_eq!(
            route("GET", "/v1/messages/count_tokens"),
            Route::MethodNotAllowed
        );
        for prefix in ["/v1beta", "/v1"] {
            assert_eq!(
                route("POST", &format!("{prefix}/models/gem/g-2.5:countTokens")),
                Route::CountTokens {
                    format: Format::Gemini,
                    path_model: Some("gem/g-2.5".into())
                }
            );
        }
        assert_eq!(error_format("/v1beta/models/m:countTokens"), Format::Gemini);
        assert_eq!(error_format("/v1/messages/count_tokens"), Format::Anthropic);
        assert_eq!(route("GET", "/context/s1"), Route::Context("s1".into()));
        assert_eq!(
            route("DELETE", "/routing/sessions/s1"),
            Route::Admin(AdminRoute::DeleteSession("s1".into()))
        );
        assert_eq!(
            route("GET", "/v1/responses/resp_1"),
            Route::Response("resp_1".into(), Action::Get)
        );
        assert_eq!(
            route("DELETE", "/v1/responses/resp_1"),
            Route::Response("resp_1".into(), Action::Delete)
        );
        assert_eq!(
            route("GET", "/v1/responses/resp_1/input_items"),
            Route::Response("resp_1".into(), Action::InputItems)
        );
        assert_eq!(route("POST", "/v1/responses/resp_1"), Route::NotFound);
        assert_eq!(route("GET", "/nope"), Route::NotFound);
    }
}
