//! OpenAI Chat Completions wire format. (Being written: see the translation issue.)

use bytes::BytesMut;
use serde_json::Value;

use crate::{
    ChatRequest, ChatResponse, SseEvent, StreamDecode, StreamEncode, StreamEvent, StreamOptions,
    TranslateError,
};

pub fn decode_request(_body: Value) -> Result<ChatRequest, TranslateError> {
    unimplemented!()
}

pub fn encode_request(_req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
    unimplemented!()
}

pub fn decode_response(_body: &[u8]) -> Result<ChatResponse, TranslateError> {
    unimplemented!()
}

pub fn encode_response(_resp: &ChatResponse) -> Vec<u8> {
    unimplemented!()
}

#[derive(Default)]
pub struct StreamDecoder {}

impl StreamDecode for StreamDecoder {
    fn decode(
        &mut self,
        _ev: &SseEvent,
        _out: &mut Vec<StreamEvent>,
    ) -> Result<(), TranslateError> {
        unimplemented!()
    }
}

pub struct StreamEncoder {
    _opts: StreamOptions,
}

impl StreamEncoder {
    pub fn new(opts: StreamOptions) -> Self {
        Self { _opts: opts }
    }
}

impl StreamEncode for StreamEncoder {
    fn encode(&mut self, _ev: &StreamEvent, _out: &mut BytesMut) {
        unimplemented!()
    }
    fn finish(&mut self, _out: &mut BytesMut) {
        unimplemented!()
    }
    fn fail(&mut self, _status: Option<u16>, _message: &str, _out: &mut BytesMut) {
        unimplemented!()
    }
}
