//! OpenAI chat completions ↔ Anthropic Messages (API version `2023-06-01`): the request a
//! Messages provider is sent for a chat completion and the chat completion its answer makes
//! (for providers), and the chat completion a Messages request makes and the message its
//! answer makes (for clients). System prompts, multi-part content with images, tools, tool
//! calls and their results, stop sequences, usage (cached tokens included) and finish
//! reasons are carried; what one side has and the other cannot say is refused.

mod stream;

use serde_json::{Map, Value, json};

pub use stream::{FromChat, ToChat};

use crate::text::{Content, arguments_object, copy, joined, kind, string};
use crate::{Body, Untranslatable, Usage};

/// The Messages API version the gateway speaks to providers.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` sent when a chat request sets none (Messages requires it).
const DEFAULT_MAX_TOKENS: u64 = 4096;

/// A message's role and its content blocks, merged with the next when the role is the same
/// (Messages alternates user and assistant turns).
fn push_turn(turns: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// The Messages request for a chat completion request (to a provider that speaks Messages).
pub fn messages_request(chat: &Body) -> Result<Body, Untranslatable> {
    let mut system = Vec::new();
    let mut turns = Vec::new();
    let messages = chat
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages: an array is required"))?;
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                system.extend(joined(content, &["text"]).filter(|t| !t.is_empty()));
            }
            "user" => push_turn(&mut turns, "user", user_blocks(content)?),
            "assistant" => push_turn(&mut turns, "assistant", assistant_blocks(message)?),
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Untranslatable::new("a tool message needs its tool_call_id"))?;
                let result = joined(content, &["text"]).unwrap_or_default();
                push_turn(
                    &mut turns,
                    "user",
                    vec![json!({ "type": "tool_result", "tool_use_id": id, "content": result })],
                );
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "messages: the role {other:?} cannot be sent to an Anthropic deployment"
                )));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(string(chat, "model")?));
    if !system.is_empty() {
        out.insert("system".into(), json!(system.join("\n\n")));
    }
    let turns: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({ "role": role, "content": content }))
        .collect();
    out.insert("messages".into(), Value::Array(turns));
    // Read as the gateway's meter reads them: the larger, a fraction rounded up, zero or less
    // as not given.
    let limit = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .filter_map(|field| chat.get(field).and_then(Value::as_f64))
        .filter(|n| n.is_finite() && *n > 0.0)
        .fold(None, |most: Option<f64>, n| {
            Some(most.map_or(n, |m| m.max(n)))
        });
    // `as` saturates a float beyond u64.
    let max_tokens = limit.map_or(DEFAULT_MAX_TOKENS, |n| n.ceil() as u64);
    out.insert("max_tokens".into(), json!(max_tokens));
    copy(
        chat,
        &mut out,
        &[
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("stream", "stream"),
        ],
    );
    match chat.get("stop") {
        Some(Value::String(stop)) => {
            out.insert("stop_sequences".into(), json!([stop]));
        }
        Some(stops @ Value::Array(_)) => {
            out.insert("stop_sequences".into(), stops.clone());
        }
        _ => {}
    }
    if let Some(user) = chat.get("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    if chat.get("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(Untranslatable::new(
            "n: Anthropic deployments give one choice",
        ));
    }
    if chat
        .get("response_format")
        .is_some_and(|format| kind(format) != "text" && !format.is_null())
    {
        return Err(Untranslatable::new(
            "response_format: Anthropic deployments cannot be held to a format",
        ));
    }
    if let Some(tools) = chat.get("tools").and_then(Value::as_array) {
        out.insert(
            "tools".into(),
            Value::Array(
                tools
                    .iter()
                    .map(tool_definition)
                    .collect::<Result<_, _>>()?,
            ),
        );
        let parallel = chat.get("parallel_tool_calls").and_then(Value::as_bool);
        if let Some(choice) = tool_choice(chat.get("tool_choice"), parallel)? {
            out.insert("tool_choice".into(), choice);
        }
    }
    Ok(out)
}

/// A user message's content as blocks: text and images (by URL or inline base64).
fn user_blocks(content: &Value) -> Result<Vec<Value>, Untranslatable> {
    let parts = match crate::text::content(content, "parts")? {
        Content::Text("") => return Ok(Vec::new()),
        Content::Text(text) => return Ok(vec![json!({ "type": "text", "text": text })]),
        Content::Parts(parts) => parts,
    };
    let mut blocks = Vec::new();
    for part in parts {
        match kind(part) {
            "text" => {
                let text = part.get("text").and_then(Value::as_str).unwrap_or("");
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
            }
            "image_url" => {
                let url = part
                    .get("image_url")
                    .and_then(|image| image.get("url").or(Some(image)))
                    .and_then(Value::as_str)
                    .ok_or_else(|| Untranslatable::new("image_url: a url is required"))?;
                blocks.push(json!({ "type": "image", "source": image_source(url) }));
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "content: a {other:?} part cannot be sent to an Anthropic deployment"
                )));
            }
        }
    }
    Ok(blocks)
}

/// An image's source: inline for a `data:` URL, else by URL.
fn image_source(url: &str) -> Value {
    let inline = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,"));
    match inline {
        Some((media_type, data)) => {
            json!({ "type": "base64", "media_type": media_type, "data": data })
        }
        None => json!({ "type": "url", "url": url }),
    }
}

/// An assistant message's blocks: its text, then its tool calls as `tool_use`.
fn assistant_blocks(message: &Value) -> Result<Vec<Value>, Untranslatable> {
    let mut blocks = Vec::new();
    if let Some(text) = message
        .get("content")
        .and_then(|content| joined(content, &["text", "output_text"]))
        .filter(|text| !text.is_empty())
    {
        blocks.push(json!({ "type": "text", "text": text }));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = function
            .get("arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        blocks.push(json!({
            "type": "tool_use",
            "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
            "name": function.get("name").and_then(Value::as_str).unwrap_or(""),
            "input": arguments_object(arguments)?,
        }));
    }
    Ok(blocks)
}

/// A chat tool (a function) as a Messages tool.
fn tool_definition(tool: &Value) -> Result<Value, Untranslatable> {
    let function = tool
        .get("function")
        .filter(|_| kind(tool) == "function")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            Untranslatable::new("tools: only function tools can be sent to an Anthropic deployment")
        })?;
    let mut out = Map::new();
    out.insert("name".into(), json!(string(function, "name")?));
    copy(function, &mut out, &[("description", "description")]);
    out.insert(
        "input_schema".into(),
        function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object", "properties": {} })),
    );
    Ok(Value::Object(out))
}

/// A chat `tool_choice` (and `parallel_tool_calls`) as a Messages `tool_choice`.
fn tool_choice(
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Value>, Untranslatable> {
    let mut out = match choice {
        None | Some(Value::Null) => json!({ "type": "auto" }),
        Some(Value::String(mode)) => match mode.as_str() {
            "auto" => json!({ "type": "auto" }),
            "required" => json!({ "type": "any" }),
            "none" => json!({ "type": "none" }),
            other => {
                return Err(Untranslatable::new(format!(
                    "tool_choice: {other:?} is not a choice"
                )));
            }
        },
        Some(named) => {
            let name = named
                .pointer("/function/name")
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new("tool_choice: a function name is required"))?;
            json!({ "type": "tool", "name": name })
        }
    };
    if parallel == Some(false)
        && let Some(object) = out.as_object_mut()
        && object.get("type").and_then(Value::as_str) != Some("none")
    {
        object.insert("disable_parallel_tool_use".into(), json!(true));
    }
    Ok((choice.is_some() || parallel.is_some()).then_some(out))
}

/// A `tool_use` block as a chat tool call (its input as the arguments' JSON text).
fn tool_call(block: &Value) -> Value {
    json!({
        "id": block.get("id").cloned().unwrap_or(Value::Null),
        "type": "function",
        "function": {
            "name": block.get("name").cloned().unwrap_or(Value::Null),
            "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
        },
    })
}

/// A Messages stop reason as a chat finish reason.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// A chat finish reason as a Messages stop reason.
fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// A Messages `usage` as chat usage: cache reads and writes are prompt tokens too. `None`
/// when it names no tokens (nothing reported: the meter then charges the reservation).
fn usage_of_message(usage: &Value) -> Option<Usage> {
    let number = |field: &str| usage.get(field).and_then(Value::as_u64);
    if number("input_tokens").is_none() && number("output_tokens").is_none() {
        return None;
    }
    let count = |field: &str| number(field).unwrap_or(0);
    let cached = count("cache_read_input_tokens");
    Some(Usage {
        prompt: count("input_tokens")
            .saturating_add(cached)
            .saturating_add(count("cache_creation_input_tokens")),
        cached,
        completion: count("output_tokens"),
    })
}

/// Chat usage as a Messages `usage`.
fn message_usage(usage: Usage) -> Value {
    json!({
        "input_tokens": usage.prompt.saturating_sub(usage.cached),
        "output_tokens": usage.completion,
        "cache_read_input_tokens": usage.cached,
        "cache_creation_input_tokens": 0,
    })
}

/// The chat completion a Messages answer makes: text blocks joined as the content, thinking
/// as `reasoning_content`, `tool_use` blocks as tool calls; usage only as reported. What is
/// not a message is refused (a misconfigured base URL must not pass for an empty answer).
pub fn chat_completion(message: &Value) -> Result<Value, Untranslatable> {
    if kind(message) != "message" || message.get("content").and_then(Value::as_array).is_none() {
        return Err(Untranslatable::new(
            "the provider's answer is not a message",
        ));
    }
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for block in message
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match kind(block) {
            "text" => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            "thinking" => {
                reasoning.push_str(block.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            "tool_use" => calls.push(tool_call(block)),
            _ => {}
        }
    }
    let mut reply = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) } });
    if !reasoning.is_empty() {
        crate::set(&mut reply, "reasoning_content", json!(reasoning));
    }
    if !calls.is_empty() {
        crate::set(&mut reply, "tool_calls", Value::Array(calls));
    }
    let stop = message
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut completion = json!({
        "id": message.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": crate::now(),
        "model": message.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{ "index": 0, "message": reply, "finish_reason": finish_reason(stop) }],
    });
    if let Some(usage) = message.get("usage").and_then(usage_of_message) {
        crate::set(&mut completion, "usage", usage.to_chat());
    }
    Ok(completion)
}

/// A Messages error body as a chat error body (the message kept, the type carried).
pub fn chat_error(body: &Value) -> Value {
    let error = body.get("error").unwrap_or(&Value::Null);
    json!({ "error": {
        "message": error.get("message").and_then(Value::as_str).unwrap_or("the provider refused the request"),
        "type": error.get("type").and_then(Value::as_str).unwrap_or("invalid_request_error"),
        "param": null,
        "code": null,
    }})
}

/// The chat completion request a Messages request makes (a client that speaks Messages).
/// The stream, if asked for, asks for its usage (the translated stream reports it).
pub fn chat_request(request: &Body) -> Result<Body, Untranslatable> {
    let mut messages = Vec::new();
    match request.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            let text = joined(system, &["text"]).ok_or_else(|| {
                Untranslatable::new("system: a string or text blocks are required")
            })?;
            messages.push(json!({ "role": "system", "content": text }));
        }
    }
    for message in request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or_else(|| Untranslatable::new("messages: an array is required"))?
    {
        match message.get("role").and_then(Value::as_str) {
            Some("user") => user_messages(
                message.get("content").unwrap_or(&Value::Null),
                &mut messages,
            )?,
            Some("assistant") => messages.push(assistant_message(
                message.get("content").unwrap_or(&Value::Null),
            )?),
            _ => {
                return Err(Untranslatable::new(
                    "messages: each role must be user or assistant",
                ));
            }
        }
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(string(request, "model")?));
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or_else(|| Untranslatable::new("max_tokens: a positive integer is required"))?;
    out.insert("max_tokens".into(), json!(max_tokens));
    copy(
        request,
        &mut out,
        &[
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("stop_sequences", "stop"),
        ],
    );
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream".into(), json!(true));
        out.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(user) = request
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        out.insert("user".into(), json!(user));
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let tools = tools
            .iter()
            .map(|tool| {
                let tool = tool.as_object().filter(|t| matches!(t.get("type").and_then(Value::as_str), None | Some("custom")))
                    .ok_or_else(|| Untranslatable::new("tools: only client tools (name, input_schema) can be called through the gateway"))?;
                let mut function = Map::new();
                function.insert("name".into(), json!(string(tool, "name")?));
                copy(tool, &mut function, &[("description", "description"), ("input_schema", "parameters")]);
                Ok(json!({ "type": "function", "function": function }))
            })
            .collect::<Result<Vec<_>, Untranslatable>>()?;
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(choice) = request.get("tool_choice") {
        let chat_choice = match kind(choice) {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => {
                json!({ "type": "function", "function": { "name": choice.get("name").cloned().unwrap_or(Value::Null) } })
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "tool_choice: {other:?} is not a choice"
                )));
            }
        };
        out.insert("tool_choice".into(), chat_choice);
        if choice
            .get("disable_parallel_tool_use")
            .and_then(Value::as_bool)
            == Some(true)
        {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    Ok(out)
}

/// A Messages user turn as chat messages: its tool results as `tool` messages first, then
/// its text and images as one user message.
fn user_messages(content: &Value, messages: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let blocks = match crate::text::content(content, "blocks")? {
        Content::Text(text) => {
            messages.push(json!({ "role": "user", "content": text }));
            return Ok(());
        }
        Content::Parts(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for block in blocks {
        match kind(block) {
            "text" => parts.push(
                json!({ "type": "text", "text": block.get("text").cloned().unwrap_or(json!("")) }),
            ),
            "image" => {
                let source = block.get("source").unwrap_or(&Value::Null);
                let url = match kind(source) {
                    "base64" => format!(
                        "data:{};base64,{}",
                        source
                            .get("media_type")
                            .and_then(Value::as_str)
                            .unwrap_or("image/png"),
                        source.get("data").and_then(Value::as_str).unwrap_or("")
                    ),
                    "url" => source
                        .get("url")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    _ => {
                        return Err(Untranslatable::new(
                            "image: a base64 or url source is required",
                        ));
                    }
                };
                parts.push(json!({ "type": "image_url", "image_url": { "url": url } }));
            }
            "tool_result" => {
                let result = block
                    .get("content")
                    .map_or(Some(String::new()), |c| joined(c, &["text"]))
                    .ok_or_else(|| Untranslatable::new("tool_result: text content is required"))?;
                messages.push(json!({
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": result,
                }));
            }
            other => {
                return Err(Untranslatable::new(format!(
                    "content: a {other:?} block cannot be sent through the gateway"
                )));
            }
        }
    }
    if !parts.is_empty() {
        messages.push(json!({ "role": "user", "content": parts }));
    }
    Ok(())
}

/// A Messages assistant turn as a chat message: its text, and its `tool_use` blocks as tool
/// calls (thinking blocks are the model's own and are not sent back).
fn assistant_message(content: &Value) -> Result<Value, Untranslatable> {
    let mut text = String::new();
    let mut calls = Vec::new();
    match crate::text::content(content, "blocks")? {
        Content::Text(said) => text.push_str(said),
        Content::Parts(blocks) => {
            for block in blocks {
                match kind(block) {
                    "text" => {
                        text.push_str(block.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    "tool_use" => calls.push(tool_call(block)),
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(Untranslatable::new(format!(
                            "content: a {other:?} block cannot be sent through the gateway"
                        )));
                    }
                }
            }
        }
    }
    let mut message = json!({ "role": "assistant", "content": text });
    if !calls.is_empty() {
        crate::set(&mut message, "tool_calls", Value::Array(calls));
    }
    Ok(message)
}

/// The Messages answer a chat completion makes, named `model` (the model the client asked
/// for): text, tool calls as `tool_use` blocks, stop reason and usage.
pub fn message(completion: &Value, model: &str) -> Value {
    let choice = completion.pointer("/choices/0").unwrap_or(&Value::Null);
    let reply = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(text) = reply
        .get("content")
        .and_then(|c| joined(c, &["text"]))
        .filter(|t| !t.is_empty())
    {
        content.push(json!({ "type": "text", "text": text }));
    }
    for call in reply
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let arguments = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("");
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": arguments_object(arguments).unwrap_or_else(|_| json!({})),
        }));
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    json!({
        "id": completion.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": null,
        "usage": message_usage(Usage::of_chat(completion).unwrap_or_default()),
    })
}

/// The Messages error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        402 | 403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// A Messages error body: the type for `status`, the message, and the gateway's stable code.
pub fn error(status: u16, message: &str, code: Option<&str>) -> Value {
    let mut error = json!({ "type": error_type(status), "message": message });
    if let Some(code) = code {
        crate::set(&mut error, "code", json!(code));
    }
    json!({ "type": "error", "error": error })
}
