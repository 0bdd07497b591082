//! An answer from the response cache, given to the client in its format:
//! whole (the format's response encoder), or as a stream (the answer told
//! as stream events, through the format's stream encoder), whichever way
//! the client asks now.

use apiproxy_translate::whole::answer_events;
use apiproxy_translate::{self as translate, ChatResponse, Format, StreamOptions};
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

use super::{end_stream_gauge, gone, note_finish, open_stream, write};
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond::{self, Headers};

/// How a cached answer is to be given.
pub struct Replay<'a> {
    pub client: Format,
    pub stream: bool,
    /// The model name the client asked for (shown instead of the upstream's).
    pub model: &'a str,
    /// An OpenAI chat client asked for the usage chunk.
    pub include_usage: bool,
}

/// Writes `answer` to the client. A client that left is noted in `ctx`.
pub async fn cached(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut answer: ChatResponse,
    how: &Replay<'_>,
    headers: &Headers,
) {
    note_finish(ctx, how.client, &answer, how.stream);
    if !how.stream {
        answer.model = how.model.to_owned();
        let body = Bytes::from(translate::encode_response(how.client, &answer));
        ctx.status = 200;
        ctx.first_byte = Some(ctx.start.elapsed());
        if respond::json(session, 200, body, headers).await.is_err() {
            gone(ctx);
        }
        return;
    }
    let mut encoder = translate::stream_encoder(
        how.client,
        StreamOptions {
            model_override: Some(how.model.to_owned()),
            include_usage: how.include_usage,
        },
    );
    let mut out = BytesMut::new();
    for ev in answer_events(&answer) {
        encoder.encode(&ev, &mut out);
    }
    encoder.finish(&mut out);
    if open_stream(session, ctx, headers).await.is_err()
        || write(session, ctx, out.freeze(), true).await.is_err()
    {
        gone(ctx);
    }
    end_stream_gauge(ctx);
}
