//! The client dialects besides chat completions: `POST /v1/messages` (Anthropic's Messages
//! API) and `POST /v1/responses` (OpenAI's Responses API). Their requests become chat
//! completions on the way in (so keys, policies, guardrails, budgets and audit see one
//! shape), and the answers, whole or streamed, and refusals are said back in the client's
//! dialect (see `routero_translate`).

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use routero_core::ErrorCode;
use routero_translate::{Untranslatable, anthropic, responses};
use serde_json::{Map, Value};

use crate::provider::Endpoint;
use crate::refusal::Refused;

/// The chat completion request a client's request makes.
pub(crate) fn request(
    endpoint: Endpoint,
    request: Map<String, Value>,
) -> Result<Map<String, Value>, Refused> {
    let translated = match endpoint {
        Endpoint::Messages => anthropic::chat_request(&request),
        Endpoint::Responses => responses::chat_request(&request),
        Endpoint::ChatCompletions | Endpoint::Embeddings => return Ok(request),
    };
    translated.map_err(|Untranslatable(why)| Refused::invalid(why))
}

/// The answer in the client's dialect, named `model` (the model it asked for): a stream
/// through the translation, a whole answer (or an error body) read and translated.
pub(crate) async fn answer(endpoint: Endpoint, model: &str, response: Response) -> Response {
    if !matches!(endpoint, Endpoint::Messages | Endpoint::Responses) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if crate::sse::is_event_stream(&parts.headers) {
        let body = match endpoint {
            Endpoint::Messages => crate::sse::translated(body, anthropic::FromChat::new(model)),
            _ => crate::sse::translated(body, responses::FromChat::new(model)),
        };
        return Response::from_parts(parts, body);
    }
    let Ok(bytes) = axum::body::to_bytes(body, crate::MAX_WHOLE_ANSWER).await else {
        return refusal(endpoint, ErrorCode::UpstreamError.into());
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        return refusal(endpoint, ErrorCode::UpstreamError.into());
    };
    let translated = match (endpoint, parts.status.is_success()) {
        (Endpoint::Messages, true) => anthropic::message(&answer, model),
        (Endpoint::Messages, false) => {
            let message = answer
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("the provider refused the request");
            anthropic::error(parts.status.as_u16(), message, None)
        }
        (_, true) => responses::response(&answer, model),
        // The Responses API's errors are shaped like chat completions'.
        (_, false) => answer,
    };
    Response::from_parts(parts, Body::from(translated.to_string()))
}

/// A refusal in the client's dialect: Anthropic's error shape (with the gateway's stable
/// code beside its type) on `/v1/messages`, OpenAI's elsewhere; headers kept.
pub(crate) fn refusal(endpoint: Endpoint, refused: Refused) -> Response {
    if endpoint != Endpoint::Messages {
        return refused.into_response();
    }
    let code = refused.refusal;
    let message = refused
        .detail
        .clone()
        .unwrap_or_else(|| code.message().to_owned());
    let (parts, _) = refused.into_response().into_parts();
    let body = anthropic::error(parts.status.as_u16(), &message, Some(code.code()));
    Response::from_parts(parts, Body::from(body.to_string()))
}
