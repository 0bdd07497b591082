//! Why an answer ended, as its client was told: the finish reasons a trace
//! reports (`gen_ai.response.finish_reasons`), one per choice.
//!
//! Read where usage is read, from the same parsed data: a same-format
//! body's members ([`crate::usage_and_finish_of_body`]), a same-format
//! stream's events (the relay parses only an event that may carry one,
//! [`may_report_finish`]), and on a translated path the neutral reason
//! spelled as the client format's encoder spells it
//! ([`client_finish_reason`]). Only a traced request asks: an untraced one
//! pays nothing for it.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use serde_json::Value;

use crate::{anthropic, gemini, openai_chat, openai_responses, FinishReason, Format};

/// At most this many choices keep their reason: a span stays small
/// whatever `n` a client asks or an upstream numbers its choices with.
const MAX_CHOICES: usize = 128;

/// One reason per choice, in choice order, spelled as the format spells it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinishReasons(Vec<(u32, String)>);

impl FinishReasons {
    /// Notes choice `index`'s reason (a later one for the same choice wins).
    pub fn note(&mut self, index: u32, reason: &str) {
        match self.0.binary_search_by_key(&index, |(i, _)| *i) {
            Ok(p) => reason.clone_into(&mut self.0[p].1),
            Err(p) if self.0.len() < MAX_CHOICES => self.0.insert(p, (index, reason.to_owned())),
            Err(_) => {}
        }
    }

    /// Forgets every reason noted.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// No reason was seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The reasons in choice order.
    pub fn into_vec(self) -> Vec<String> {
        // Not collected in place: the list would be shrunk into its
        // smaller elements by a `realloc`, dearer than a fresh one.
        let mut out = Vec::with_capacity(self.0.len());
        out.extend(self.0.into_iter().map(|(_, r)| r));
        out
    }
}

/// The keys of a choice's reason in `fmt`'s list of choices, the first
/// found first (none: `fmt` has no list of choices).
pub(crate) fn choice_reason_keys(fmt: Format) -> &'static [&'static str] {
    match fmt {
        Format::OpenAiChat => &["finish_reason"],
        Format::Gemini => &["finishReason", "finish_reason"],
        _ => &[],
    }
}

/// The top-level members of a whole answer in `fmt` that say why it ended.
pub(crate) fn body_keys(fmt: Format) -> &'static [&'static str] {
    match fmt {
        Format::OpenAiChat => &["choices"],
        Format::OpenAiResponses => &["status", "incomplete_details"],
        Format::Anthropic => &["stop_reason"],
        Format::Gemini => &["candidates"],
        Format::Bedrock => &["stopReason"],
    }
}

/// True when a stream event's data in `fmt` may carry a finish reason: an
/// event without one need not be parsed for it. OpenAI Chat writes
/// `"finish_reason":null` in every chunk and Anthropic `"stop_reason":null`
/// in its first event, so the key counts only with a string after it. A key
/// inside a JSON string has its quotes escaped and is not matched. One scan
/// of the event, with a searcher built once per process.
pub fn may_report_finish(fmt: Format, data: &[u8]) -> bool {
    type Searcher = LazyLock<Finder<'static>>;
    static FINISH_REASON: Searcher = LazyLock::new(|| Finder::new(b"\"finish_reason\""));
    static STOP_REASON: Searcher = LazyLock::new(|| Finder::new(b"\"stop_reason\""));
    static FINISH: Searcher = LazyLock::new(|| Finder::new(b"\"finish"));
    static RESPONSE: Searcher = LazyLock::new(|| Finder::new(b"\"response."));
    static STOP_REASON_CAMEL: Searcher = LazyLock::new(|| Finder::new(b"\"stopReason\""));
    let (finder, ends, key): (&Searcher, &[&[u8]], bool) = match fmt {
        Format::OpenAiChat => (&FINISH_REASON, &[b""], true),
        Format::Anthropic => (&STOP_REASON, &[b""], true),
        Format::Gemini => (&FINISH, &[b"Reason\"", b"_reason\""], true),
        // `response.failed` is an error told in the stream, not a finish.
        Format::OpenAiResponses => (&RESPONSE, &[b"completed\"", b"incomplete\""], false),
        Format::Bedrock => (&STOP_REASON_CAMEL, &[b""], true),
    };
    let skip_ws = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_whitespace()).count();
    let len = finder.needle().len();
    finder.find_iter(data).any(|p| {
        let rest = &data[p + len..];
        ends.iter().any(|end| match rest.strip_prefix(*end) {
            None => false,
            // A value: found.
            Some(_) if !key => true,
            // A key: found when a string follows.
            Some(after) => {
                let after = &after[skip_ws(after)..];
                match after.split_first() {
                    Some((b':', r)) => r.get(skip_ws(r)) == Some(&b'"'),
                    _ => false,
                }
            }
        })
    })
}

/// Notes the finish reasons `v` reports: a whole answer in `fmt` (or the
/// members of one that say why it ended, [`body_keys`]) or one of its
/// stream events.
pub fn read_finish(fmt: Format, v: &Value, out: &mut FinishReasons) {
    if let Value::Array(items) = v {
        // Gemini without `alt=sse`: a JSON array of chunks.
        for item in items {
            read_finish(fmt, item, out);
        }
        return;
    }
    fn text(v: Option<&Value>) -> Option<&str> {
        v.and_then(Value::as_str)
    }
    match fmt {
        Format::OpenAiChat => per_choice(v.get("choices"), choice_reason_keys(fmt), out),
        Format::Gemini => per_choice(v.get("candidates"), choice_reason_keys(fmt), out),
        // A stream's `message_delta`, or a body's top-level member.
        Format::Anthropic => {
            if let Some(r) = text(v.pointer("/delta/stop_reason")).or(text(v.get("stop_reason"))) {
                out.note(0, r);
            }
        }
        Format::OpenAiResponses => {
            let answer = match text(v.get("type")) {
                Some("response.completed" | "response.incomplete") => v.get("response"),
                Some(_) => None,
                // A body: the response object itself.
                None => Some(v),
            };
            if let Some(r) = answer.and_then(|a| {
                text(a.pointer("/incomplete_details/reason")).or(text(a.get("status")))
            }) {
                out.note(0, r);
            }
        }
        // A body's member, or a `messageStop` event's payload.
        Format::Bedrock => {
            if let Some(r) = text(v.get("stopReason")) {
                out.note(0, r);
            }
        }
    }
}

/// Each choice's reason under the first of `keys` it has, numbered by its
/// `index` (its place in the list when it has none).
fn per_choice(choices: Option<&Value>, keys: &[&str], out: &mut FinishReasons) {
    let Some(choices) = choices.and_then(Value::as_array) else {
        return;
    };
    for (place, c) in choices.iter().enumerate() {
        let reason = keys.iter().find_map(|k| c.get(*k).and_then(Value::as_str));
        if let Some(r) = reason {
            let index = c
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(u32::try_from(place).unwrap_or(u32::MAX));
            out.note(index, r);
        }
    }
}

/// The finish reason a client in `client`'s format is given for a
/// translated answer that ended with `reason` (`None`: the upstream gave
/// none) and `called_tools`, as that format's encoders write it: a whole
/// answer, or with `stream` the event stream's end. `None` when the client
/// gets none (a whole Gemini answer without one; no client speaks Bedrock).
pub fn client_finish_reason(
    client: Format,
    reason: Option<&FinishReason>,
    called_tools: bool,
    stream: bool,
) -> Option<&str> {
    match client {
        Format::OpenAiChat => Some(openai_chat::finish_to_str(reason, called_tools)),
        Format::Anthropic => Some(match reason {
            Some(r) => anthropic::stop_reason_from_finish(r),
            None if called_tools => "tool_use",
            None => "end_turn",
        }),
        Format::OpenAiResponses => Some(openai_responses::finish_name(reason)),
        Format::Gemini => match reason {
            Some(r) => Some(gemini::encode_finish(r)),
            // The stream encoder closes with STOP; a body leaves it out.
            None if stream => Some("STOP"),
            None => None,
        },
        Format::Bedrock => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(fmt: Format, data: &str) -> Vec<String> {
        let mut out = FinishReasons::default();
        if may_report_finish(fmt, data.as_bytes()) {
            read_finish(fmt, &serde_json::from_str(data).unwrap(), &mut out);
        }
        out.into_vec()
    }

    #[test]
    fn each_formats_stream_event_names_its_reason() {
        let cases = [
            (
                Format::OpenAiChat,
                r#"{"choices":[{"index":0,"delta":{},"finish_reason" : "tool_calls"}]}"#,
                vec!["tool_calls"],
            ),
            (
                Format::Anthropic,
                r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":7}}"#,
                vec!["max_tokens"],
            ),
            (
                Format::Gemini,
                r#"{"candidates":[{"content":{"parts":[{"text":""}]},"finishReason":"STOP","index":0}]}"#,
                vec!["STOP"],
            ),
            (
                Format::OpenAiResponses,
                r#"{"type":"response.incomplete","response":{"status":"incomplete","incomplete_details":{"reason":"max_output_tokens"}}}"#,
                vec!["max_output_tokens"],
            ),
            (
                Format::OpenAiResponses,
                r#"{"type":"response.completed","response":{"status":"completed","incomplete_details":null}}"#,
                vec!["completed"],
            ),
            (
                Format::Gemini,
                r#"{"candidates":[{"finish_reason" :"SAFETY"}]}"#,
                vec!["SAFETY"],
            ),
            (
                Format::Bedrock,
                r#"{"stopReason":"tool_use"}"#,
                vec!["tool_use"],
            ),
        ];
        for (fmt, data, want) in cases {
            assert_eq!(read(fmt, data), want, "{fmt:?} {data}");
        }
    }

    #[test]
    fn events_without_a_reason_are_not_read() {
        let none = [
            (
                Format::OpenAiChat,
                r#"{"choices":[{"index":0,"delta":{"content":"\"finish_reason\":\"x\""},"finish_reason":null}]}"#,
            ),
            (
                Format::Anthropic,
                r#"{"type":"message_start","message":{"stop_reason":null,"usage":{"input_tokens":3}}}"#,
            ),
            (
                Format::OpenAiResponses,
                r#"{"type":"response.output_item.done","item":{"status":"completed"}}"#,
            ),
            (
                Format::OpenAiResponses,
                r#"{"type":"response.failed","response":{"status":"failed","error":{"code":"server_error"}}}"#,
            ),
            (
                Format::Gemini,
                r#"{"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}"#,
            ),
        ];
        for (fmt, data) in none {
            assert!(!may_report_finish(fmt, data.as_bytes()), "{fmt:?} {data}");
        }
        // A Responses event that only names the type in its text is read
        // and found to carry nothing.
        let text = r#"{"type":"response.output_text.delta","delta":"see \"response.completed\""}"#;
        assert!(read(Format::OpenAiResponses, text).is_empty());
    }

    #[test]
    fn one_reason_per_choice_in_choice_order() {
        let mut out = FinishReasons::default();
        let chunk = |i: u32, r: &str| serde_json::json!({"choices":[{"index": i, "delta": {}, "finish_reason": r}]});
        read_finish(Format::OpenAiChat, &chunk(1, "length"), &mut out);
        read_finish(Format::OpenAiChat, &chunk(0, "stop"), &mut out);
        read_finish(Format::OpenAiChat, &chunk(1, "stop"), &mut out);
        assert_eq!(out.into_vec(), ["stop", "stop"]);
        // Gemini's candidates, numbered by place when they carry no index.
        let gemini = serde_json::json!({"candidates":[{"finishReason":"STOP"},{"finishReason":"MAX_TOKENS"}]});
        let mut out = FinishReasons::default();
        read_finish(Format::Gemini, &gemini, &mut out);
        assert_eq!(out.into_vec(), ["STOP", "MAX_TOKENS"]);
        // Bounded whatever the upstream numbers its choices with.
        let mut out = FinishReasons::default();
        for i in 0..1000u32 {
            out.note(i * 7919, "stop");
        }
        assert_eq!(out.into_vec().len(), MAX_CHOICES);
    }

    #[test]
    fn a_translated_reason_is_spelled_as_the_clients_encoder_writes_it() {
        let tools = Some(&FinishReason::ToolCalls);
        let stop = Some(&FinishReason::Stop);
        let length = Some(&FinishReason::Length);
        let cases = [
            (Format::OpenAiChat, tools, false, Some("tool_calls")),
            // Gemini says STOP after a call; OpenAI clients key on tool_calls.
            (Format::OpenAiChat, stop, true, Some("tool_calls")),
            (Format::OpenAiChat, None, false, Some("stop")),
            (Format::Anthropic, tools, true, Some("tool_use")),
            (Format::Anthropic, None, true, Some("tool_use")),
            (Format::Anthropic, length, false, Some("max_tokens")),
            (Format::OpenAiResponses, tools, true, Some("completed")),
            (
                Format::OpenAiResponses,
                length,
                false,
                Some("max_output_tokens"),
            ),
            (Format::Gemini, tools, true, Some("STOP")),
            (Format::Gemini, None, false, None),
            (Format::Bedrock, stop, false, None),
        ];
        for (client, reason, called, want) in cases {
            assert_eq!(
                client_finish_reason(client, reason, called, false),
                want,
                "{client:?} {reason:?} {called}"
            );
        }
        assert_eq!(
            client_finish_reason(Format::Gemini, None, false, true),
            Some("STOP")
        );
    }
}
