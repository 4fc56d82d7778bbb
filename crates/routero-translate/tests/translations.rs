//! The translations driven as the gateway drives them: requests, whole answers and streams
//! (events fed one by one, output read back as a client would), and any input read without
//! panicking.

use proptest::prelude::*;
use routero_translate::{StreamTranslator, anthropic, responses};
use serde_json::{Value, json};

fn body(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// The data of each event in `out`, with its `event:` name.
fn read_events(out: &str) -> Vec<(Option<String>, String)> {
    out.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let mut name = None;
            let mut data = String::new();
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d.to_owned();
                }
            }
            (name, data)
        })
        .collect()
}

fn run(translator: &mut dyn StreamTranslator, input: &[(Option<&str>, Value)]) -> String {
    let mut out = String::new();
    for (name, data) in input {
        let data = match data {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        translator.event(*name, &data, &mut out);
    }
    translator.end(&mut out);
    out
}

#[test]
fn a_chat_request_becomes_a_messages_request() {
    let chat = body(json!({
        "model": "claude-x", "max_completion_tokens": 99, "stop": "END", "user": "u1",
        "temperature": 0.2, "parallel_tool_calls": false, "tool_choice": {"type": "function", "function": {"name": "f"}},
        "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": [{"type": "text", "text": "look"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r1"},
            {"role": "user", "content": "next"},
        ],
    }));
    let sent = anthropic::messages_request(&chat).unwrap();
    assert_eq!(sent["system"], "one\n\ntwo");
    assert_eq!(sent["max_tokens"], 99);
    assert_eq!(sent["stop_sequences"], json!(["END"]));
    assert_eq!(sent["metadata"], json!({"user_id": "u1"}));
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true})
    );
    assert_eq!(
        sent["tools"],
        json!([{"name": "f", "description": "d", "input_schema": {"type": "object"}}])
    );
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]},
            // The tool result and the next user text alternate as one user turn.
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                                         {"type": "text", "text": "next"}]},
        ])
    );
    for (field, value) in [
        ("n", json!(2)),
        ("response_format", json!({"type": "json_object"})),
    ] {
        let mut asked = chat.clone();
        asked.insert(field.into(), value);
        assert!(
            anthropic::messages_request(&asked)
                .unwrap_err()
                .0
                .contains(field)
        );
    }
}

#[test]
fn a_messages_answer_becomes_a_chat_completion_and_back() {
    let answer = json!({
        "id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": "tool_use",
        "content": [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "ok"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
        "usage": {"input_tokens": 3, "cache_read_input_tokens": 4, "output_tokens": 5},
    });
    let completion = anthropic::chat_completion(&answer).unwrap();
    let message = &completion["choices"][0]["message"];
    assert_eq!(message["content"], "ok");
    assert_eq!(message["reasoning_content"], "hmm");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"a\":1}"
    );
    assert_eq!(completion["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(completion["usage"]["prompt_tokens"], 7);
    assert_eq!(
        completion["usage"]["prompt_tokens_details"]["cached_tokens"],
        4
    );
    let back = anthropic::message(&completion, "asked");
    assert_eq!(back["model"], "asked");
    assert_eq!(back["stop_reason"], "tool_use");
    assert_eq!(
        back["content"][1],
        json!({"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}})
    );
    assert_eq!(back["usage"]["input_tokens"], 3);
    assert_eq!(back["usage"]["cache_read_input_tokens"], 4);

    // What is not a message is refused; a message without usage reports none (the meter then
    // charges the reservation), not zero.
    for not_a_message in [
        json!({}),
        json!({"error": {"type": "x"}}),
        json!({"type": "message"}),
    ] {
        assert!(
            anthropic::chat_completion(&not_a_message).is_err(),
            "{not_a_message}"
        );
    }
    let unreported =
        anthropic::chat_completion(&json!({"type": "message", "content": []})).unwrap();
    assert!(unreported.get("usage").is_none(), "{unreported}");
}

#[test]
fn a_messages_stream_becomes_chat_chunks() {
    let mut translator = anthropic::ToChat::new(true);
    let out = run(
        &mut translator,
        &[
            (
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 2}}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
            ),
            (
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\""}}),
            ),
            (
                Some("content_block_delta"),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ":1}"}}),
            ),
            (Some("ping"), json!({"type": "ping"})),
            (
                Some("message_delta"),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            ),
            (Some("message_stop"), json!({"type": "message_stop"})),
        ],
    );
    let chunks: Vec<String> = read_events(&out)
        .into_iter()
        .map(|(_, data)| data)
        .collect();
    assert_eq!(chunks.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = chunks
        .iter()
        .filter(|c| *c != "[DONE]")
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let arguments: String = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(arguments, "{\"a\":1}");
    let text: String = parsed
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hi");
    let opened = parsed
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"][0].get("id"))
        .unwrap();
    assert_eq!(opened, "t");
    assert!(parsed.iter().any(|c| {
        let call = &c["choices"][0]["delta"]["tool_calls"][0];
        call["index"] == 0 && call["function"]["name"] == "f"
    }));
    assert!(
        parsed
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    let usage = &parsed.last().unwrap()["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(2), Some(9))
    );

    // A stream that breaks off ends with an error, never as if it were whole.
    for cut in [
        vec![(None, json!({"type": "message_start", "message": {}}))],
        // A stop without a message, or without its stop reason, is no answer either.
        vec![(None, json!({"type": "message_stop"}))],
        vec![
            (None, json!({"type": "message_start", "message": {}})),
            (None, json!({"type": "message_stop"})),
        ],
    ] {
        let out = run(&mut anthropic::ToChat::new(true), &cut);
        assert!(
            out.contains("\"error\"") && !out.contains("[DONE]"),
            "{out}"
        );
        assert!(!out.contains("\"usage\""), "no usage was reported: {out}");
    }
}

#[test]
fn chat_chunks_become_a_messages_stream_with_late_released_arguments() {
    let chunk = |delta: Value, finish: Value| json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let out = run(
        &mut anthropic::FromChat::new("asked"),
        &[
            (
                None,
                chunk(json!({"role": "assistant", "content": "a"}), Value::Null),
            ),
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "id": "t0", "function": {"name": "f", "arguments": "{\"x\""}}]}),
                    Value::Null,
                ),
            ),
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 1, "id": "t1", "function": {"name": "g", "arguments": ""}}]}),
                    Value::Null,
                ),
            ),
            // Held back by the guardrails and released at the end: still tool 0's.
            (
                None,
                chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": ":2}"}}]}),
                    Value::Null,
                ),
            ),
            (None, chunk(json!({}), json!("tool_calls"))),
            (
                None,
                json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 6}}),
            ),
            (None, json!("[DONE]")),
        ],
    );
    let read = read_events(&out);
    let names: Vec<&str> = read
        .iter()
        .filter_map(|(name, _)| name.as_deref())
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    let data: Vec<Value> = read
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let json_of = |index: u64| -> String {
        data.iter()
            .filter(|e| e["type"] == "content_block_delta" && e["index"] == index)
            .filter_map(|e| e["delta"]["partial_json"].as_str())
            .collect()
    };
    assert_eq!(json_of(1), "{\"x\":2}");
    let delta = data.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(
        (
            delta["usage"]["input_tokens"].as_u64(),
            delta["usage"]["output_tokens"].as_u64()
        ),
        (Some(4), Some(6))
    );

    // An error chunk (a guardrail's block) is Anthropic's error event, and the end.
    let out = run(
        &mut anthropic::FromChat::new("asked"),
        &[
            (None, chunk(json!({"content": "a"}), Value::Null)),
            (
                None,
                json!({"error": {"message": "blocked", "code": "guardrail_blocked"}}),
            ),
        ],
    );
    let last = read_events(&out).pop().unwrap();
    assert_eq!(last.0.as_deref(), Some("error"));
    assert!(
        last.1.contains("guardrail_blocked") && !out.contains("message_stop"),
        "{out}"
    );
}

#[test]
fn a_messages_request_becomes_a_chat_request() {
    let request = body(json!({
        "model": "m", "max_tokens": 10, "system": [{"type": "text", "text": "sys"}], "stream": true,
        "stop_sequences": ["x"], "metadata": {"user_id": "u"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "s"},
                                              {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "r"}]},
                                         {"type": "text", "text": "more"}]},
        ],
    }));
    let chat = anthropic::chat_request(&request).unwrap();
    assert_eq!(
        chat["tools"],
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    );
    assert_eq!(chat["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        (
            &chat["stop"],
            &chat["user"],
            &chat["tool_choice"],
            &chat["parallel_tool_calls"]
        ),
        (
            &json!(["x"]),
            &json!("u"),
            &json!("required"),
            &json!(false)
        )
    );
    assert_eq!(
        chat["messages"],
        json!([
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "r"},
            {"role": "user", "content": [{"type": "text", "text": "more"}]},
        ])
    );
}

#[test]
fn a_responses_request_and_stream_translate() {
    let request = body(json!({
        "model": "m", "instructions": "be", "max_output_tokens": 5, "stream": true,
        "text": {"format": {"type": "json_schema", "name": "s", "schema": {"type": "object"}}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "q"}]},
                  {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                  {"type": "function_call_output", "call_id": "c1", "output": "r"}],
    }));
    let chat = responses::chat_request(&request).unwrap();
    assert_eq!(
        chat["tools"],
        json!([{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    );
    assert_eq!(
        chat["messages"][0],
        json!({"role": "system", "content": "be"})
    );
    assert_eq!(chat["max_completion_tokens"], 5);
    assert_eq!(
        chat["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}})
    );
    assert_eq!(chat["messages"][2]["tool_calls"][0]["id"], "c1");
    assert_eq!(
        chat["messages"][3],
        json!({"role": "tool", "tool_call_id": "c1", "content": "r"})
    );
    let mut built_in = request.clone();
    built_in.insert("tools".into(), json!([{"type": "web_search"}]));
    assert!(responses::chat_request(&built_in).is_err());

    let chunk = |delta: Value, finish: Value| json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
    let out = run(
        &mut responses::FromChat::new("asked"),
        &[
            (None, chunk(json!({"content": "he"}), Value::Null)),
            (None, chunk(json!({"content": "llo"}), json!("length"))),
            (
                None,
                json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
            ),
            (None, json!("[DONE]")),
        ],
    );
    let data: Vec<Value> = read_events(&out)
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let sequence: Vec<u64> = data
        .iter()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect();
    assert_eq!(sequence, (0..data.len() as u64).collect::<Vec<_>>());
    let last = data.last().unwrap();
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], "hello");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
}

proptest! {
    /// Whatever a provider or a client streams, each translation reads it without panicking
    /// and ends it exactly once.
    #[test]
    fn any_stream_is_read_without_panicking(
        events in proptest::collection::vec(("[a-z_]{0,20}", prop_oneof![
            Just("[DONE]".to_owned()),
            "\\PC{0,40}",
            Just(r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"x"}}"#.to_owned()),
            Just(r#"{"type":"message_stop"}"#.to_owned()),
            Just(r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":9,"function":{"arguments":"y"}}]}}]}"#.to_owned()),
            Just(r#"{"choices":[{"delta":{"content":7}}],"usage":{"prompt_tokens":-1}}"#.to_owned()),
        ]), 0..12),
    ) {
        let translators: Vec<Box<dyn StreamTranslator>> = vec![
            Box::new(anthropic::ToChat::new(true)),
            Box::new(anthropic::FromChat::new("m")),
            Box::new(responses::FromChat::new("m")),
        ];
        for mut translator in translators {
            let mut out = String::new();
            for (name, data) in &events {
                translator.event(Some(name), data, &mut out);
            }
            translator.end(&mut out);
            translator.end(&mut out);
            let closings = read_events(&out)
                .iter()
                .filter(|(name, data)| {
                    matches!(
                        name.as_deref(),
                        Some("message_stop" | "error" | "response.completed" | "response.incomplete")
                    ) || (name.is_none() && (data == "[DONE]" || data.starts_with("{\"error\"")))
                })
                .count();
            prop_assert_eq!(closings, 1, "{}", out);
        }
    }
}
