//! `/console`: the web console's page (`routero-console`), given the CSRF token of the session
//! the browser holds, or the sign-in view without one; and its assets.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use subtle::ConstantTimeEq as _;

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
            .map(|live| (live, csrf_token(&state.csrf, token)))
            // A session whose token this page could not carry (opened before tokens were made
            // this way) gets the sign-in view, not a page whose every change would be refused.
            .filter(|(live, csrf)| {
                bool::from(state.hasher.hash(csrf).0.as_slice().ct_eq(&live.csrf_hash))
            })
            .map(|(_, csrf)| csrf),
        None => None,
    };
    routero_console::page(live.as_deref())
}

/// `GET /console/assets/{name}`.
pub(super) async fn asset(Path(name): Path<String>) -> Response {
    routero_console::asset(&name)
}
