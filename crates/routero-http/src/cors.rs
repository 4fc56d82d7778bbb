//! Cross-origin requests from browsers (CORS), the same on both planes: a tenant allows a list
//! of exact origins (none by default); a preflight is answered for an origin some tenant allows,
//! and a response carries `Access-Control-Allow-Origin` only when the caller's tenant allows the
//! request's origin. Credentials (cookies) are never allowed cross-origin: browsers' apps call
//! with keys.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The most origins a tenant may allow.
pub const MAX_ORIGINS: usize = 100;

/// Checks an origin as a tenant lists it: `scheme://host[:port]`, `http` or `https`, nothing
/// more (no path, no wildcard, no default port); returns it in canonical form.
pub fn origin(text: &str) -> Result<String, String> {
    let refused =
        || format!("{text}: an origin is scheme://host[:port] (http or https), nothing more");
    let url = url::Url::parse(text).map_err(|_| refused())?;
    let canonical = url.origin().ascii_serialization();
    let host_ok = match url.host() {
        Some(url::Host::Domain(name)) => name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
        Some(_) => true,
        None => false,
    };
    if !host_ok
        || !matches!(url.scheme(), "http" | "https")
        || !text.eq_ignore_ascii_case(&canonical)
    {
        return Err(refused());
    }
    Ok(canonical)
}

/// The request's `Origin`, when it sends one.
pub fn request_origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(header::ORIGIN)
}

/// Whether a request is a CORS preflight.
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Whether `allowed` (a tenant's canonical origins) lists the request's origin.
pub fn allows<'a>(allowed: impl IntoIterator<Item = &'a str>, origin: &HeaderValue) -> bool {
    origin
        .to_str()
        .is_ok_and(|o| allowed.into_iter().any(|a| a.eq_ignore_ascii_case(o)))
}

/// The answer to a preflight: 204, with the origin allowed when `allowed` (methods the API
/// takes, the headers the browser asked for, cached ten minutes), or without (the browser
/// then refuses the request).
pub fn preflight(headers: &HeaderMap, allowed: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::VARY, HeaderValue::from_static("Origin"));
    if let (true, Some(origin)) = (allowed, request_origin(headers)) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE"),
        );
        if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
        }
        out.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    response
}

/// Lets the browser read `response` from `origin` (already checked against the caller's
/// tenant).
pub fn allow(response: &mut Response, origin: &HeaderValue) {
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    out.append(header::VARY, HeaderValue::from_static("Origin"));
    out.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("x-request-id, retry-after"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            origin("https://App.Example.com").unwrap(),
            "https://app.example.com"
        );
        assert!(origin("http://localhost:5173").is_ok());
        assert!(origin("http://[::1]:8080").is_ok());
        for bad in [
            "*",
            "null",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://*.example.com",
            "https://app.example.com:",
            "https://app.example.com:80a",
            "https://user@app.example.com",
            "https://",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflights_answer_only_allowed_origins() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        headers.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert!(is_preflight(&Method::OPTIONS, &headers));
        let open = preflight(&headers, true);
        assert_eq!(
            open.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        let closed = preflight(&headers, false);
        assert!(
            !closed
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        let origin = HeaderValue::from_static("https://app.example.com");
        assert!(allows(["https://app.example.com"], &origin));
        assert!(!allows(["https://other.example.com"], &origin));
    }
}
