//! `/console`: the web console's page (`routero-console`), given the CSRF token of the session
//! the browser holds, or the sign-in view without one; and its assets.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use super::AppState;
use super::sessions::{csrf_token, session_token};

/// `GET /console`.
pub(super) async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let idle = i64::try_from(state.sessions.idle.as_secs()).unwrap_or(i64::MAX);
    let live = match session_token(&headers) {
        Some(token) => state
            .store
            .find_session(&state.hasher.hash(token).0, idle)
            .await
            .ok()
            .flatten()
            .map(|_| csrf_token(&state.hasher, token)),
        None => None,
    };
    routero_console::page(live.as_deref())
}

/// `GET /console/assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    routero_console::asset(&name)
}
