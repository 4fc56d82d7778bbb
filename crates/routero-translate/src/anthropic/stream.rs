//! Event streams between the two dialects: a Messages stream (message_start,
//! content_block_start/delta/stop with text, thinking and input_json deltas, message_delta,
//! message_stop, error) as chat completion chunks, and chat completion chunks as a Messages
//! stream. Either ends with an error event when its source ends before its own end.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{finish_reason, message_usage, stop_reason, usage_of_message};
use crate::text::kind;
use crate::{MAX_TOOLS, StreamTranslator, Usage, chat_error_event, sse};

/// A Messages stream (from a provider) as chat completion chunks.
#[derive(Debug, Default)]
pub struct ToChat {
    /// Whether the client asked for a last chunk carrying the usage.
    include_usage: bool,
    id: String,
    model: String,
    /// Whether message_start came (a stream without it is not a message).
    started: bool,
    /// The usage reported so far, if any.
    usage: Option<Usage>,
    /// Whether message_delta gave the stop reason.
    stopped: bool,
    /// Content block index → the tool call index it is.
    tools: BTreeMap<u64, u64>,
    done: bool,
}

impl ToChat {
    /// A translation that ends with a usage chunk when `include_usage`.
    pub fn new(include_usage: bool) -> Self {
        Self {
            include_usage,
            ..Self::default()
        }
    }

    fn chunk(&self, out: &mut String, choices: Value, usage: Option<Value>) {
        let mut chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": crate::now(),
            "model": self.model, "choices": choices,
        });
        if let Some(usage) = usage {
            crate::set(&mut chunk, "usage", usage);
        }
        sse(out, None, &chunk.to_string());
    }

    fn delta(&self, out: &mut String, delta: Value) {
        self.chunk(
            out,
            json!([{ "index": 0, "delta": delta, "finish_reason": null }]),
            None,
        );
    }

    fn fail(&mut self, out: &mut String, kind: &str, message: &str) {
        chat_error_event(out, kind, "upstream_error", message);
        self.done = true;
    }
}

impl StreamTranslator for ToChat {
    fn event(&mut self, _name: Option<&str>, data: &str, out: &mut String) {
        if self.done {
            return;
        }
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            return self.fail(
                out,
                "upstream_error",
                "the provider's stream could not be read",
            );
        };
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match kind(&event) {
            "message_start" => {
                let message = event.get("message").unwrap_or(&Value::Null);
                let text = |field: &str| {
                    message
                        .get(field)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                };
                self.id = text("id");
                self.model = text("model");
                self.started = true;
                self.usage = message.get("usage").and_then(usage_of_message);
                self.delta(out, json!({ "role": "assistant", "content": "" }));
            }
            "content_block_start" => {
                let block = event.get("content_block").unwrap_or(&Value::Null);
                match kind(block) {
                    "tool_use" if self.tools.len() >= MAX_TOOLS => {
                        self.fail(
                            out,
                            "upstream_error",
                            "the provider's answer calls too many tools",
                        );
                    }
                    "tool_use" => {
                        let tool = u64::try_from(self.tools.len()).unwrap_or(u64::MAX);
                        self.tools.insert(index, tool);
                        self.delta(
                            out,
                            json!({ "tool_calls": [{
                                "index": tool, "id": block.get("id"), "type": "function",
                                "function": { "name": block.get("name"), "arguments": "" },
                            }]}),
                        );
                    }
                    "text" => {
                        if let Some(text) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            self.delta(out, json!({ "content": text }));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta").unwrap_or(&Value::Null);
                let piece = |field: &str| delta.get(field).and_then(Value::as_str).unwrap_or("");
                match kind(delta) {
                    "text_delta" => self.delta(out, json!({ "content": piece("text") })),
                    "thinking_delta" => {
                        self.delta(out, json!({ "reasoning_content": piece("thinking") }))
                    }
                    "input_json_delta" => {
                        let tool = self.tools.get(&index).copied().unwrap_or(0);
                        self.delta(
                            out,
                            json!({ "tool_calls": [{
                                "index": tool, "function": { "arguments": piece("partial_json") },
                            }]}),
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reported) = event.get("usage").and_then(usage_of_message) {
                    let usage = self.usage.get_or_insert_default();
                    usage.completion = reported.completion;
                    if event.pointer("/usage/input_tokens").is_some() {
                        usage.prompt = reported.prompt;
                        usage.cached = reported.cached;
                    }
                }
                if let Some(stop) = event.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stopped = true;
                    let finish = finish_reason(stop);
                    self.chunk(
                        out,
                        json!([{ "index": 0, "delta": {}, "finish_reason": finish }]),
                        None,
                    );
                }
            }
            "message_stop" if !(self.started && self.stopped) => {
                self.fail(
                    out,
                    "upstream_error",
                    "the provider's stream ended without a message",
                );
            }
            "message_stop" => {
                if let (true, Some(usage)) = (self.include_usage, self.usage) {
                    self.chunk(out, json!([]), Some(usage.to_chat()));
                }
                sse(out, None, "[DONE]");
                self.done = true;
            }
            "error" => {
                let error = event.get("error").unwrap_or(&Value::Null);
                let kind = error
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("upstream_error")
                    .to_owned();
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the provider failed")
                    .to_owned();
                self.fail(out, &kind, &message);
            }
            // ping, content_block_stop, and event types added later.
            _ => {}
        }
    }

    fn end(&mut self, out: &mut String) {
        if !self.done {
            self.fail(
                out,
                "upstream_error",
                "the provider's stream ended before its end",
            );
        }
    }
}

/// What a Messages content block the translation opened carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool(u64),
}

/// Chat completion chunks (of the gateway) as a Messages stream (to a client). Blocks stay
/// open until the stream ends: held-back text released late still reaches its own block.
#[derive(Debug)]
pub struct FromChat {
    /// The model the client asked for.
    model: String,
    started: bool,
    /// Blocks opened, in index order.
    blocks: Vec<Block>,
    stop: &'static str,
    usage: Usage,
    done: bool,
}

impl FromChat {
    /// A translation whose message is named `model`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            blocks: Vec::new(),
            stop: "end_turn",
            usage: Usage::default(),
            done: false,
        }
    }

    fn emit(out: &mut String, event: &Value) {
        sse(
            out,
            event.get("type").and_then(Value::as_str),
            &event.to_string(),
        );
    }

    /// The index of the block carrying `block`, opening it (with `start`) if it is new.
    fn block(
        &mut self,
        out: &mut String,
        block: Block,
        start: impl FnOnce() -> Value,
    ) -> Option<usize> {
        if let Some(index) = self.blocks.iter().position(|open| *open == block) {
            return Some(index);
        }
        if self.blocks.len() > MAX_TOOLS {
            self.end_with_error(
                out,
                502,
                "the answer calls too many tools",
                "upstream_error",
            );
            return None;
        }
        self.blocks.push(block);
        let index = self.blocks.len() - 1;
        Self::emit(
            out,
            &json!({ "type": "content_block_start", "index": index, "content_block": start() }),
        );
        Some(index)
    }

    fn end_with_error(&mut self, out: &mut String, status: u16, message: &str, code: &str) {
        Self::emit(out, &super::error(status, message, Some(code)));
        self.done = true;
    }
}

impl crate::FromChatChunks for FromChat {
    fn done(&self) -> bool {
        self.done
    }

    fn usage(&mut self, usage: Usage) {
        self.usage = usage;
    }

    fn fail(&mut self, out: &mut String, code: &str, message: &str) {
        let status = if code == "upstream_error" { 502 } else { 400 };
        self.end_with_error(out, status, message, code);
    }

    fn start(&mut self, out: &mut String, id: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        Self::emit(
            out,
            &json!({ "type": "message_start", "message": {
                "id": id.unwrap_or("msg_routero"), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 },
            }}),
        );
    }

    fn choice(&mut self, out: &mut String, choice: &Value) {
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let Some(index) =
                self.block(out, Block::Text, || json!({ "type": "text", "text": "" }))
            else {
                return;
            };
            Self::emit(
                out,
                &json!({ "type": "content_block_delta", "index": index,
                "delta": { "type": "text_delta", "text": text } }),
            );
        }
        for (tool, call) in crate::tool_calls(delta) {
            let Some(index) = self.block(out, Block::Tool(tool), || json!({
                "type": "tool_use", "id": call.get("id"), "name": call.pointer("/function/name"), "input": {},
            })) else {
                return;
            };
            if let Some(arguments) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                Self::emit(
                    out,
                    &json!({ "type": "content_block_delta", "index": index,
                    "delta": { "type": "input_json_delta", "partial_json": arguments } }),
                );
            }
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop = stop_reason(finish);
        }
    }

    fn complete(&mut self, out: &mut String) {
        self.start(out, None);
        for index in 0..self.blocks.len() {
            Self::emit(
                out,
                &json!({ "type": "content_block_stop", "index": index }),
            );
        }
        let usage = message_usage(self.usage);
        Self::emit(
            out,
            &json!({ "type": "message_delta",
            "delta": { "stop_reason": self.stop, "stop_sequence": null }, "usage": usage }),
        );
        Self::emit(out, &json!({ "type": "message_stop" }));
        self.done = true;
    }
}
