//! Responses API state on any upstream. A Responses client's answer served
//! by a non-Responses upstream is kept by the gateway (`store` true, the
//! API's default): its own input items, its output and the response it
//! continued, under the client key's id, for `store.responses_ttl_seconds`
//! (at most `store.responses_max_bytes` a record). A later request naming it
//! in `previous_response_id` has the chain expanded into `input` before it is
//! translated, so every upstream sees the whole conversation in its own
//! format; `GET` / `DELETE /v1/responses/{id}` and `GET
//! /v1/responses/{id}/input_items` read and remove the records.
//!
//! A response a native Responses upstream (`wire_api: responses`) served is
//! kept by that provider, as before: the gateway remembers which provider
//! (`Deferred::Reference`), and a request continuing it goes there only.
//!
//! Who may read, continue or delete a record is decided by [`owner`] alone:
//! the client key's id, `-` for anonymous callers of an open gateway (who
//! therefore share their records). Another owner's id reads as absent (404,
//! or 400 "not found" when continued), never as forbidden, so no caller
//! learns that another key's id exists.

use std::sync::Arc;
use std::time::Duration;

use apiproxy_store::Store;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::ctx::{Keep, RequestCtx};
use crate::body::{Edit, Field, RawBody};
use crate::error::GatewayError;

/// The owner of the records a request reads, continues, deletes or keeps:
/// the one place that decides it.
pub fn owner(ctx: &RequestCtx) -> &str {
    ctx.state_owner().unwrap_or("-")
}

/// The limits of an expansion.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// `store.responses_max_chain`.
    pub max_chain: usize,
    /// `server.max_body_bytes`: the expanded body may not be larger than a
    /// body the client could have sent.
    pub max_body_bytes: usize,
    /// `store.responses_ttl_seconds`.
    pub ttl: Duration,
}

/// OpenAI's answer to a `previous_response_id` it does not know (also given
/// for another key's id and for a response kept with `store: false`).
pub fn previous_not_found(id: &str) -> GatewayError {
    GatewayError::bad_request(format!("Previous response with id '{id}' not found."))
}

fn response_not_found(id: &str) -> GatewayError {
    GatewayError::not_found(format!("Response with id '{id}' not found."))
}

/// A kept record as stored: `input` and `response` stay JSON text, so an
/// expansion splices bytes and never builds a tree of the conversation.
#[derive(serde::Deserialize)]
struct Record<'a> {
    previous_response_id: Option<String>,
    #[serde(borrow)]
    input: &'a RawValue,
    #[serde(borrow)]
    response: &'a RawValue,
}

/// The output items of a kept response, as JSON text.
#[derive(serde::Deserialize)]
struct Output<'a> {
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

fn record(input: &str, previous: Option<&str>, response: &Value) -> Vec<u8> {
    let previous = serde_json::to_string(&previous).unwrap_or_else(|_| "null".into());
    format!(r#"{{"previous_response_id":{previous},"input":{input},"response":{response}}}"#)
        .into_bytes()
}

fn parse_record(raw: &[u8]) -> Option<Record<'_>> {
    match serde_json::from_slice::<Record>(raw) {
        Ok(r) => Some(r),
        Err(e) => {
            log::warn!("a kept response record does not parse ({e}); read as absent");
            None
        }
    }
}

/// The `input` of a Responses body (its JSON text) as the text of a list
/// of items: a string is one user message, as OpenAI lists it.
fn input_items(raw: Option<&str>) -> String {
    let Some(raw) = raw.map(str::trim) else {
        return "[]".into();
    };
    match raw.as_bytes().first() {
        Some(b'[') => raw.to_owned(),
        Some(b'"') => {
            let text: String = serde_json::from_str(raw).unwrap_or_default();
            json!([{
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }])
            .to_string()
        }
        _ => "[]".into(),
    }
}

/// The elements of a JSON array's text, without its brackets (empty for
/// an empty array or anything else).
fn elements(array: &str) -> &str {
    array
        .trim()
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .map(str::trim)
        .unwrap_or("")
}

fn new_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

/// Prepares a Responses request: sets up the keeping of its answer unless
/// `store` is false, and expands a `previous_response_id` this owner's
/// records hold into `input` (`Some(new body bytes)`: the body spliced,
/// not rebuilt). `Ok(None)`: the body goes as it is (no previous id, or one
/// the gateway does not keep: the caller checks it against the
/// provider-side references).
pub async fn prepare(
    store: &Arc<dyn Store>,
    ctx: &mut RequestCtx,
    body: &RawBody,
    bounds: Bounds,
) -> Result<Option<Vec<u8>>, GatewayError> {
    let owner = owner(ctx).to_owned();
    let keeps = body.member("store").and_then(|v| v.as_bool()) != Some(false);
    let previous = match body.value(Field::PreviousResponseId) {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    let own_input = input_items(body.raw(Field::Input));
    let history = match &previous {
        Some(id) => expand(store.as_ref(), &owner, id, bounds).await?,
        None => None,
    };
    let expanded = history.map(|h| {
        let parts: Vec<&str> = [h.as_str(), elements(&own_input)]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect();
        format!("[{}]", parts.join(","))
    });
    if keeps {
        ctx.keep_response = Some(Box::new(Keep {
            id: new_id("resp"),
            store: Arc::clone(store),
            owner,
            input: own_input,
            // A provider-side id is not the gateway's to chain.
            previous: expanded.as_ref().and(previous),
            ttl: bounds.ttl,
            response: None,
        }));
    }
    let Some(expanded) = expanded else {
        return Ok(None);
    };
    let append: &[(&str, &str)] = if body.has(Field::Input) {
        &[]
    } else {
        &[("input", expanded.as_str())]
    };
    let out = body.splice(
        |field, _| match field {
            Field::Input => Edit::Set(expanded.clone()),
            Field::PreviousResponseId => Edit::Drop,
            _ => Edit::Keep,
        },
        append,
    );
    if out.len() > bounds.max_body_bytes {
        return Err(GatewayError::bad_request(format!(
            "previous_response_id: the conversation it continues is {} bytes, over server.max_body_bytes ({})",
            out.len(),
            bounds.max_body_bytes
        )));
    }
    Ok(Some(out))
}

/// The items of the conversation that ends with response `id` (every
/// response's input then output, oldest first), as the comma-separated
/// JSON text of the items; `None` when the owner has no record of `id` (it
/// may be a provider's). A link missing further back (expired, deleted) is
/// "not found" like OpenAI's.
async fn expand(
    store: &dyn Store,
    owner: &str,
    id: &str,
    bounds: Bounds,
) -> Result<Option<String>, GatewayError> {
    let Some(first) = store.get_response(owner, id).await else {
        return Ok(None);
    };
    let mut bytes = first.len();
    let mut raws = vec![first];
    loop {
        let Some(last) = raws.last().and_then(|r| parse_record(r)) else {
            return Err(previous_not_found(id));
        };
        let Some(prev) = last.previous_response_id else {
            break;
        };
        if raws.len() >= bounds.max_chain {
            return Err(GatewayError::bad_request(format!(
                "previous_response_id: the conversation is longer than store.responses_max_chain ({} responses)",
                bounds.max_chain
            )));
        }
        let Some(link) = store.get_response(owner, &prev).await else {
            return Err(previous_not_found(&prev));
        };
        bytes += link.len();
        if bytes > bounds.max_body_bytes {
            return Err(GatewayError::bad_request(format!(
                "previous_response_id: the conversation it continues is over server.max_body_bytes ({})",
                bounds.max_body_bytes
            )));
        }
        raws.push(link);
    }
    let mut items: Vec<&str> = Vec::new();
    for raw in raws.iter().rev() {
        let Some(rec) = parse_record(raw) else {
            return Err(previous_not_found(id));
        };
        items.push(elements(rec.input.get()));
        let output = serde_json::from_str::<Output>(rec.response.get())
            .ok()
            .and_then(|o| o.output);
        items.push(output.map_or("", |o| elements(o.get())));
    }
    items.retain(|i| !i.is_empty());
    Ok(Some(items.join(",")))
}

impl Keep {
    /// Notes the whole response of a non-streamed answer (`body`: the
    /// Responses JSON written to the client).
    pub fn answered(&mut self, body: &[u8]) {
        self.response = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(Value::is_object);
    }

    /// Notes the whole response when `out` (Responses events written to
    /// the client) holds the closing `response.completed` event.
    pub fn scan_events(&mut self, out: &[u8]) {
        if !out
            .windows(b"response.completed".len())
            .any(|w| w == b"response.completed")
        {
            return;
        }
        for line in out.split(|b| *b == b'\n') {
            let Some(data) = line.strip_prefix(b"data:") else {
                continue;
            };
            let Ok(mut ev) = serde_json::from_slice::<Value>(data.trim_ascii()) else {
                continue;
            };
            if ev.get("type").and_then(Value::as_str) == Some("response.completed") {
                if let Some(r) = ev.get_mut("response").map(Value::take) {
                    self.response = Some(r);
                }
            }
        }
    }

    /// Writes the record (awaited: the client's next turn, on any replica,
    /// finds it). Nothing when the answer never completed.
    pub async fn save(self) {
        let Some(mut response) = self.response else {
            return;
        };
        let Some(id) = response
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return;
        };
        if let Some(m) = response.as_object_mut() {
            m.insert("previous_response_id".into(), json!(self.previous));
            m.insert("store".into(), Value::Bool(true));
        }
        let entry = record(&self.input, self.previous.as_deref(), &response);
        if !self
            .store
            .put_response(&self.owner, &id, &entry, self.ttl)
            .await
        {
            log::warn!(
                "response {id} ({} bytes) was not kept (over store.responses_max_bytes, or the store refused it)",
                entry.len()
            );
        }
    }
}

/// What `/v1/responses/{id}...` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Get,
    Delete,
    InputItems,
}

/// Answers `GET` / `DELETE /v1/responses/{id}` and `GET
/// /v1/responses/{id}/input_items` (`query`: the URI's query) for the
/// owner of `ctx`.
pub async fn answer(
    store: &dyn Store,
    ctx: &RequestCtx,
    id: &str,
    action: Action,
    query: Option<&str>,
) -> Result<Value, GatewayError> {
    let owner = owner(ctx);
    if action == Action::Delete {
        return if store.delete_response(owner, id).await {
            Ok(json!({"id": id, "object": "response", "deleted": true}))
        } else {
            Err(response_not_found(id))
        };
    }
    let Some(raw) = store.get_response(owner, id).await else {
        return Err(response_not_found(id));
    };
    let Some(rec) = parse_record(&raw) else {
        return Err(response_not_found(id));
    };
    if action == Action::Get {
        return serde_json::from_str(rec.response.get()).map_err(|_| response_not_found(id));
    }
    let items: Vec<Value> = serde_json::from_str(rec.input.get()).unwrap_or_default();
    list_page(with_ids(items, id), &Page::parse(query)?)
}

/// Input items with an `id` each (OpenAI's have one; `input_items` pages by
/// it): one the client did not give is made from the response id and the
/// item's place, the same at every listing.
fn with_ids(mut items: Vec<Value>, response_id: &str) -> Vec<Value> {
    let stem = response_id.strip_prefix("resp_").unwrap_or(response_id);
    for (i, item) in items.iter_mut().enumerate() {
        if let Some(m) = item.as_object_mut() {
            if !m.contains_key("id") {
                m.insert("id".into(), Value::String(format!("msg_{stem}_{i}")));
            }
        }
    }
    items
}

/// The paging of `input_items` (OpenAI's: `limit` 1-100, default 20;
/// `order` `desc`, default, or `asc`; `after` an item id).
struct Page {
    limit: usize,
    ascending: bool,
    after: Option<String>,
}

impl Page {
    fn parse(query: Option<&str>) -> Result<Page, GatewayError> {
        let mut page = Page {
            limit: 20,
            ascending: false,
            after: None,
        };
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match k.as_ref() {
                "limit" => {
                    page.limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| {
                            GatewayError::bad_request("limit: expected an integer from 1 to 100")
                        })?;
                }
                "order" => {
                    page.ascending = match v.as_ref() {
                        "asc" => true,
                        "desc" => false,
                        _ => return Err(GatewayError::bad_request("order: expected asc or desc")),
                    }
                }
                "after" => page.after = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(page)
    }
}

fn list_page(mut items: Vec<Value>, page: &Page) -> Result<Value, GatewayError> {
    if !page.ascending {
        items.reverse();
    }
    let start = match &page.after {
        Some(after) => {
            let at = items
                .iter()
                .position(|i| i.get("id").and_then(Value::as_str) == Some(after.as_str()));
            match at {
                Some(n) => n + 1,
                None => {
                    return Err(GatewayError::bad_request(format!(
                        "after: no input item with id '{after}'"
                    )))
                }
            }
        }
        None => 0,
    };
    let rest = items.len().saturating_sub(start);
    let data: Vec<Value> = items.into_iter().skip(start).take(page.limit).collect();
    let id_of = |v: Option<&Value>| v.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
    Ok(json!({
        "object": "list",
        "first_id": id_of(data.first()),
        "last_id": id_of(data.last()),
        "has_more": rest > data.len(),
        "data": data,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({"id": format!("msg_{i}")})).collect()
    }

    #[test]
    fn input_items_page_newest_first_by_default() {
        let page = Page::parse(Some("limit=2")).unwrap();
        let v = list_page(items(3), &page).unwrap();
        assert_eq!(v["first_id"], "msg_2");
        assert_eq!(v["last_id"], "msg_1");
        assert_eq!(v["has_more"], true);
        let page = Page::parse(Some("limit=2&order=asc&after=msg_1")).unwrap();
        let v = list_page(items(3), &page).unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["first_id"], "msg_2");
        assert_eq!(v["has_more"], false);
        assert!(Page::parse(Some("limit=0")).is_err());
        assert!(Page::parse(Some("order=up")).is_err());
    }

    #[test]
    fn a_string_input_is_one_user_message() {
        let v: Value = serde_json::from_str(&input_items(Some(r#""hi""#))).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 1);
        assert_eq!(v[0]["role"], "user");
        assert_eq!(v[0]["content"][0]["text"], "hi");
        assert_eq!(input_items(None), "[]");
        assert_eq!(elements(" [ {\"a\":1} ] "), "{\"a\":1}");
        assert_eq!(elements("[]"), "");
    }

    #[test]
    fn listed_items_get_stable_ids() {
        let items = with_ids(vec![json!({"id": "msg_a"}), json!({})], "resp_9");
        assert_eq!(items[0]["id"], "msg_a");
        assert_eq!(items[1]["id"], "msg_9_1");
    }

    #[tokio::test]
    async fn events_without_the_closing_one_note_nothing() {
        let mut keep = Keep {
            id: "resp_1".into(),
            store: Arc::new(apiproxy_store::memory::MemoryStore::new(&Default::default())),
            owner: "-".into(),
            input: "[]".into(),
            previous: None,
            ttl: Duration::from_secs(1),
            response: None,
        };
        keep.scan_events(b"event: response.created\ndata: {\"type\":\"response.created\"}\n\n");
        assert!(keep.response.is_none());
        keep.scan_events(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"resp_1\"}}\n\n");
        assert_eq!(keep.response.unwrap()["id"], "resp_1");
    }
}
