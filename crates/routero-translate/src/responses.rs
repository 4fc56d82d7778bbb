//! OpenAI Responses (a client that speaks `POST /v1/responses`) as chat completions: the
//! request (instructions, input text or items, function tools and their outputs, text
//! format), the answer (output messages and function calls, usage, incomplete reasons) and
//! the event stream (`response.created` … `response.completed`). The gateway keeps no
//! responses: `previous_response_id` and built-in tools are refused.

use serde_json::{Map, Value, json};

use crate::text::{copy, joined, kind, string};
use crate::{Body, Untranslatable, Usage, sse};

/// The chat completion request a Responses request makes. A stream asks for its usage.
pub fn chat_request(request: &Body) -> Result<Body, Untranslatable> {
    if request
        .get("previous_response_id")
        .is_some_and(|id| !id.is_null())
    {
        return Err(Untranslatable::new(
            "previous_response_id: the gateway keeps no responses; send the conversation as input",
        ));
    }
    let mut messages = Vec::new();
    if let Some(instructions) = request.get("instructions").and_then(Value::as_str) {
        messages.push(json!({ "role": "system", "content": instructions }));
    }
    match request.get("input") {
        Some(Value::String(text)) => messages.push(json!({ "role": "user", "content": text })),
        Some(Value::Array(items)) => {
            for item in items {
                input_item(item, &mut messages)?;
            }
        }
        _ => {
            return Err(Untranslatable::new(
                "input: a string or an array of items is required",
            ));
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(string(request, "model")?));
    out.insert("messages".into(), Value::Array(messages));
    copy(
        request,
        &mut out,
        &[
            ("max_output_tokens", "max_completion_tokens"),
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("parallel_tool_calls", "parallel_tool_calls"),
            ("user", "user"),
        ],
    );
    if let Some(effort) = request
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .filter(|e| !e.is_null())
    {
        out.insert("reasoning_effort".into(), effort.clone());
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(format) = request.get("text").and_then(|t| t.get("format")) {
        match kind(format) {
            "text" => {}
            "json_object" => {
                out.insert("response_format".into(), json!({ "type": "json_object" }));
            }
            "json_schema" => {
                let mut schema = format.as_object().cloned().unwrap_or_default();
                schema.remove("type");
                out.insert(
                    "response_format".into(),
                    json!({ "type": "json_schema", "json_schema": schema }),
                );
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "text.format: {other:?} is not a format"
                )));
            }
        }
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .map(|tool| {
                let tool = tool
                    .as_object()
                    .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or_else(|| {
                        Untranslatable::new(
                            "tools: only function tools can be called through the gateway",
                        )
                    })?;
                let mut function = Map::new();
                function.insert("name".into(), json!(string(tool, "name")?));
                copy(
                    tool,
                    &mut function,
                    &[
                        ("description", "description"),
                        ("parameters", "parameters"),
                        ("strict", "strict"),
                    ],
                );
                Ok(json!({ "type": "function", "function": function }))
            })
            .collect::<Result<Vec<_>, Untranslatable>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    match request.get("tool_choice") {
        None | Some(Value::Null) => {}
        Some(mode @ Value::String(_)) => {
            out.insert("tool_choice".into(), mode.clone());
        }
        Some(named) => {
            let name = named
                .get("name")
                .and_then(Value::as_str)
                .filter(|_| kind(named) == "function")
                .ok_or_else(|| Untranslatable::new("tool_choice: a function name is required"))?;
            out.insert(
                "tool_choice".into(),
                json!({ "type": "function", "function": { "name": name } }),
            );
        }
    }
    Ok(out)
}

/// One input item as chat messages: a message, a function call (joined to the assistant
/// message before it, if that one only calls), or a function call's output.
fn input_item(item: &Value, messages: &mut Vec<Value>) -> Result<(), Untranslatable> {
    match kind(item) {
        "message" | "" => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("");
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(Untranslatable::new(format!(
                    "input: the role {role:?} is not a role"
                )));
            }
            let content = match item.get("content") {
                Some(Value::String(text)) => json!(text),
                Some(Value::Array(parts)) => {
                    Value::Array(parts.iter().map(content_part).collect::<Result<_, _>>()?)
                }
                _ => return Err(Untranslatable::new("input: a message needs its content")),
            };
            messages.push(json!({ "role": role, "content": content }));
        }
        "function_call" => {
            let call = json!({
                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": { "name": item.get("name").cloned().unwrap_or(Value::Null),
                              "arguments": item.get("arguments").cloned().unwrap_or(json!("{}")) },
            });
            let calling = messages.last_mut().filter(|m| {
                m.get("role") == Some(&json!("assistant")) && m.get("tool_calls").is_some()
            });
            match calling
                .and_then(|m| m.get_mut("tool_calls"))
                .and_then(Value::as_array_mut)
            {
                Some(calls) => calls.push(call),
                None => messages
                    .push(json!({ "role": "assistant", "content": null, "tool_calls": [call] })),
            }
        }
        "function_call_output" => {
            let output = item
                .get("output")
                .and_then(|o| joined(o, &["input_text", "output_text", "text"]))
                .unwrap_or_default();
            messages.push(json!({ "role": "tool", "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null), "content": output }));
        }
        other => {
            return Err(Untranslatable::new(format!(
                "input: a {other:?} item cannot be sent through the gateway"
            )));
        }
    }
    Ok(())
}

/// An input content part as a chat part.
fn content_part(part: &Value) -> Result<Value, Untranslatable> {
    match kind(part) {
        "input_text" | "output_text" | "text" => {
            Ok(json!({ "type": "text", "text": part.get("text").cloned().unwrap_or(json!("")) }))
        }
        "input_image" => {
            let url = part
                .get("image_url")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Untranslatable::new(
                        "input_image: an image_url is required (file ids are not kept)",
                    )
                })?;
            Ok(json!({ "type": "image_url", "image_url": { "url": url } }))
        }
        other => Err(Untranslatable::new(format!(
            "input: a {other:?} part cannot be sent through the gateway"
        ))),
    }
}

/// Responses usage for chat usage.
fn response_usage(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt,
        "input_tokens_details": { "cached_tokens": usage.cached },
        "output_tokens": usage.completion,
        "output_tokens_details": { "reasoning_tokens": 0 },
        "total_tokens": usage.prompt.saturating_add(usage.completion),
    })
}

/// The status and incomplete details a finish reason makes.
fn status(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({ "reason": "max_output_tokens" })),
        Some("content_filter") => ("incomplete", json!({ "reason": "content_filter" })),
        _ => ("completed", Value::Null),
    }
}

/// A response object: `output` items, `status`, usage, named `model`.
fn response_object(
    id: &str,
    model: &str,
    output: Vec<Value>,
    finish: Option<&str>,
    usage: Option<Usage>,
) -> Value {
    let (status, incomplete) = match usage {
        Some(_) => status(finish),
        None => ("in_progress", Value::Null),
    };
    json!({
        "id": id, "object": "response", "created_at": crate::now(), "status": status,
        "model": model, "output": output, "error": null, "incomplete_details": incomplete,
        "instructions": null, "metadata": {}, "parallel_tool_calls": true, "temperature": null,
        "top_p": null, "tool_choice": "auto", "tools": [], "text": { "format": { "type": "text" } },
        "usage": usage.map(response_usage),
    })
}

/// An assistant message item with its text.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [] }],
    })
}

/// A function call item.
fn call_item(id: &str, call_id: &Value, name: &Value, arguments: &str, status: &str) -> Value {
    json!({ "type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": status })
}

/// The response object a chat completion makes, named `model`.
pub fn response(completion: &Value, model: &str) -> Value {
    let id = format!(
        "resp_{}",
        completion
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("routero")
    );
    let choice = completion.pointer("/choices/0").unwrap_or(&Value::Null);
    let reply = choice.get("message").unwrap_or(&Value::Null);
    let mut output = Vec::new();
    if let Some(text) = reply
        .get("content")
        .and_then(|c| joined(c, &["text"]))
        .filter(|t| !t.is_empty())
    {
        output.push(message_item(&format!("msg_{id}"), &text, "completed"));
    }
    if let Some(refusal) = reply.get("refusal").and_then(Value::as_str) {
        output.push(json!({ "type": "message", "id": format!("msg_{id}_refusal"), "status": "completed", "role": "assistant",
            "content": [{ "type": "refusal", "refusal": refusal }] }));
    }
    for (n, call) in reply
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        output.push(call_item(
            &format!("fc_{id}_{n}"),
            call.get("id").unwrap_or(&Value::Null),
            call.pointer("/function/name").unwrap_or(&Value::Null),
            arguments,
            "completed",
        ));
    }
    let finish = choice.get("finish_reason").and_then(Value::as_str);
    response_object(
        &id,
        model,
        output,
        finish,
        Some(Usage::of_chat(completion).unwrap_or_default()),
    )
}

/// An output item being streamed.
#[derive(Debug)]
struct Item {
    /// `None` for the message; the chat tool call index for a function call.
    tool: Option<u64>,
    id: String,
    call_id: Value,
    name: Value,
    text: String,
}

/// Chat completion chunks (of the gateway) as a Responses event stream (to a client). Items
/// stay open until the stream ends: held-back text released late still reaches its item.
#[derive(Debug)]
pub struct FromChat {
    model: String,
    id: String,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    finish: Option<String>,
    usage: Usage,
    /// Bytes of text kept for the items' closing events.
    kept: usize,
    done: bool,
}

/// Most text a streamed response keeps for its closing events (then it ends with an error).
const MAX_KEPT: usize = 16 * 1024 * 1024;

impl FromChat {
    /// A translation whose response is named `model`.
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            id: String::new(),
            sequence: 0,
            started: false,
            items: Vec::new(),
            finish: None,
            usage: Usage::default(),
            kept: 0,
            done: false,
        }
    }

    fn emit(&mut self, out: &mut String, mut event: Value) {
        crate::set(&mut event, "sequence_number", json!(self.sequence));
        self.sequence += 1;
        sse(
            out,
            event.get("type").and_then(Value::as_str),
            &event.to_string(),
        );
    }

    /// The output index of the item for `tool` (`None`: the message), added if new.
    fn item(&mut self, out: &mut String, tool: Option<u64>, call: &Value) -> usize {
        if let Some(index) = self.items.iter().position(|item| item.tool == tool) {
            return index;
        }
        let index = self.items.len();
        let item = match tool {
            None => Item {
                tool,
                id: format!("msg_{}", self.id),
                call_id: Value::Null,
                name: Value::Null,
                text: String::new(),
            },
            Some(n) => Item {
                tool,
                id: format!("fc_{}_{n}", self.id),
                call_id: call.get("id").cloned().unwrap_or(Value::Null),
                name: call
                    .pointer("/function/name")
                    .cloned()
                    .unwrap_or(Value::Null),
                text: String::new(),
            },
        };
        let added = match tool {
            None => {
                json!({ "type": "message", "id": item.id, "status": "in_progress", "role": "assistant", "content": [] })
            }
            Some(_) => call_item(&item.id, &item.call_id, &item.name, "", "in_progress"),
        };
        let item_id = item.id.clone();
        self.items.push(item);
        self.emit(
            out,
            json!({ "type": "response.output_item.added", "output_index": index, "item": added }),
        );
        if tool.is_none() {
            self.emit(out, json!({ "type": "response.content_part.added", "item_id": item_id, "output_index": index,
                "content_index": 0, "part": { "type": "output_text", "text": "", "annotations": [] } }));
        }
        index
    }
}

impl crate::FromChatChunks for FromChat {
    fn done(&self) -> bool {
        self.done
    }

    fn usage(&mut self, usage: Usage) {
        self.usage = usage;
    }

    fn start(&mut self, out: &mut String, chunk_id: Option<&str>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = format!("resp_{}", chunk_id.unwrap_or("routero"));
        let response = response_object(&self.id, &self.model, Vec::new(), None, None);
        self.emit(
            out,
            json!({ "type": "response.created", "response": response }),
        );
        self.emit(
            out,
            json!({ "type": "response.in_progress", "response": response }),
        );
    }

    fn choice(&mut self, out: &mut String, choice: &Value) {
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let text_of = |value: Option<&Value>| value.and_then(Value::as_str).map_or(0, str::len);
        let calls = delta.get("tool_calls").and_then(Value::as_array);
        self.kept = self
            .kept
            .saturating_add(text_of(delta.get("content")))
            .saturating_add(
                calls
                    .into_iter()
                    .flatten()
                    .map(|c| text_of(c.pointer("/function/arguments")))
                    .sum(),
            );
        if self.kept > MAX_KEPT || self.items.len() > crate::MAX_TOOLS {
            return self.fail(
                out,
                "upstream_error",
                "the answer is too long to relay as a response",
            );
        }
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.item(out, None, &Value::Null);
            if let Some(item) = self.items.get_mut(index) {
                item.text.push_str(text);
                let id = item.id.clone();
                self.emit(out, json!({ "type": "response.output_text.delta", "item_id": id, "output_index": index,
                    "content_index": 0, "delta": text, "logprobs": [] }));
            }
        }
        for (tool, call) in crate::tool_calls(delta) {
            let index = self.item(out, Some(tool), call);
            let arguments = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            if let (Some(item), false) = (self.items.get_mut(index), arguments.is_empty()) {
                item.text.push_str(arguments);
                let id = item.id.clone();
                self.emit(
                    out,
                    json!({ "type": "response.function_call_arguments.delta", "item_id": id,
                    "output_index": index, "delta": arguments }),
                );
            }
        }
        if let Some(finish) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(finish.to_owned());
        }
    }

    fn complete(&mut self, out: &mut String) {
        self.start(out, None);
        let items = std::mem::take(&mut self.items);
        let mut output = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let done = match item.tool {
                None => {
                    self.emit(out, json!({ "type": "response.output_text.done", "item_id": item.id, "output_index": index,
                        "content_index": 0, "text": item.text, "logprobs": [] }));
                    self.emit(out, json!({ "type": "response.content_part.done", "item_id": item.id, "output_index": index,
                        "content_index": 0, "part": { "type": "output_text", "text": item.text, "annotations": [] } }));
                    message_item(&item.id, &item.text, "completed")
                }
                Some(_) => {
                    self.emit(
                        out,
                        json!({ "type": "response.function_call_arguments.done", "item_id": item.id,
                        "output_index": index, "arguments": item.text }),
                    );
                    call_item(&item.id, &item.call_id, &item.name, &item.text, "completed")
                }
            };
            self.emit(
                out,
                json!({ "type": "response.output_item.done", "output_index": index, "item": done }),
            );
            output.push(done);
        }
        let response = response_object(
            &self.id,
            &self.model,
            output,
            self.finish.as_deref(),
            Some(self.usage),
        );
        let kind = if response.get("status") == Some(&json!("completed")) {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, json!({ "type": kind, "response": response }));
        self.done = true;
    }

    fn fail(&mut self, out: &mut String, code: &str, message: &str) {
        self.emit(
            out,
            json!({ "type": "error", "code": code, "message": message, "param": null }),
        );
        self.done = true;
    }
}
