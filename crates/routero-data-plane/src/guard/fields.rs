//! Which texts the guardrails read: everything of a request that the model is given, and
//! everything of a response that the client gets.

use serde_json::{Map, Value};

/// Texts in the order they are read, and whether each is the conversation's user or tool
/// text (jailbreaks are scored over those together).
#[derive(Default)]
pub(super) struct Texts<'a> {
    pub(super) texts: Vec<&'a mut String>,
    pub(super) scored: Vec<bool>,
}

/// Input the guardrails cannot read: token ids instead of text.
#[derive(Debug)]
pub(crate) struct Uninspectable;

impl<'a> Texts<'a> {
    fn add(&mut self, text: &'a mut String, scored: bool) {
        self.texts.push(text);
        self.scored.push(scored);
    }

    /// Every string in `value`, at any depth (schemas, parts, arguments).
    fn all(&mut self, value: &'a mut Value, scored: bool) {
        match value {
            Value::String(text) => self.add(text, scored),
            Value::Array(items) => items.iter_mut().for_each(|item| self.all(item, scored)),
            Value::Object(fields) => fields.values_mut().for_each(|v| self.all(v, scored)),
            _ => {}
        }
    }

    /// A message's content: a string, or parts whose text (or refusal) is read; images,
    /// audio and files are not text.
    fn content(&mut self, content: &'a mut Value, scored: bool) {
        match content {
            Value::String(text) => self.add(text, scored),
            Value::Array(parts) => {
                for part in parts.iter_mut().filter_map(Value::as_object_mut) {
                    for (field, value) in part.iter_mut() {
                        if matches!(field.as_str(), "text" | "refusal") {
                            self.all(value, scored);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// A chat message (request or response): its content, name, refusal, reasoning, audio
    /// transcript, and tool and function calls.
    fn message(&mut self, message: &'a mut Value) {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let scored = matches!(role, "user" | "tool" | "function");
        let Value::Object(fields) = message else {
            return;
        };
        for (field, value) in fields.iter_mut() {
            match field.as_str() {
                "content" => self.content(value, scored),
                "name" | "refusal" | "reasoning_content" | "tool_calls" | "function_call"
                | "tool_call_id" => {
                    self.all(value, scored);
                }
                "audio" => {
                    if let Some(transcript) = value.get_mut("transcript") {
                        self.all(transcript, scored);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Every text of a request body the model is given: messages (content, parts, names, tool
/// and function calls and their ids), tool and legacy function definitions (descriptions and
/// parameter schemas), response formats, predictions, prompts and embeddings input; and the
/// texts sent beside them: tool choices, stop sequences, the end user's id, metadata.
pub(super) fn request(body: &mut Map<String, Value>) -> Result<Texts<'_>, Uninspectable> {
    let mut texts = Texts::default();
    for (field, value) in body.iter_mut() {
        match field.as_str() {
            "messages" => {
                if let Value::Array(messages) = value {
                    messages.iter_mut().for_each(|m| texts.message(m));
                }
            }
            // Not the model's to read, but sent to the provider all the same.
            "tools" | "functions" | "response_format" | "prediction" | "tool_choice" | "stop"
            | "user" | "metadata" => texts.all(value, false),
            "prompt" | "input" => {
                if tokens(value) {
                    return Err(Uninspectable);
                }
                texts.all(value, true);
            }
            _ => {}
        }
    }
    Ok(texts)
}

/// Whether `input` holds token ids (numbers) rather than text.
fn tokens(input: &Value) -> bool {
    match input {
        Value::Number(_) => true,
        Value::Array(items) => items.iter().any(tokens),
        _ => false,
    }
}

/// Every text of a chat completion the client gets: each choice's message.
pub(super) fn response(completion: &mut Value) -> Texts<'_> {
    let mut texts = Texts::default();
    if let Some(Value::Array(choices)) = completion.get_mut("choices") {
        for message in choices.iter_mut().filter_map(|c| c.get_mut("message")) {
            texts.message(message);
        }
    }
    texts
}

/// Drops what would spell out a response beside its text, token by token: `logprobs` (token
/// text and bytes) in each choice.
pub(super) fn drop_logprobs(chunk: &mut Value) {
    if let Some(Value::Array(choices)) = chunk.get_mut("choices") {
        for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
            choice.remove("logprobs");
        }
    }
}
