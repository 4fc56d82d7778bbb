//! Routero's web console, served by the control plane at `/console`: one page and its
//! script and style sheet, embedded in the binary (air-gapped sites: no CDN, no fonts). The
//! page holds no data: its script asks the admin API (same origin, the session cookie, the
//! session's CSRF token from the page's `routero-csrf` meta element) and writes every value as
//! text, never as markup. Every answer carries a strict Content-Security-Policy (scripts and
//! styles from this origin only, no inline ones, no framing).
#![forbid(unsafe_code)]

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// What the browser may load and do on console pages.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
frame-ancestors 'none'; base-uri 'none'";

const PAGE: &str = include_str!("../assets/console.html");
const SCRIPT: &str = include_str!("../assets/console.js");
const STYLE: &str = include_str!("../assets/console.css");
const ICON: &str = include_str!("../assets/favicon.svg");

/// The console page; `csrf` is the signed-in session's CSRF token (none: the sign-in view).
pub fn page(csrf: Option<&str>) -> Response {
    let token = csrf.map(escape).unwrap_or_default();
    secured("text/html; charset=utf-8", PAGE.replace("{{csrf}}", &token))
}

/// An asset of the page by its name (`console.js`, `console.css`, `favicon.svg`); 404 for
/// any other.
pub fn asset(name: &str) -> Response {
    match name {
        "console.js" => secured("text/javascript; charset=utf-8", SCRIPT.to_owned()),
        "console.css" => secured("text/css; charset=utf-8", STYLE.to_owned()),
        "favicon.svg" => secured("image/svg+xml", ICON.to_owned()),
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// `body` with the console's security headers.
fn secured(content_type: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// `text` safe inside an HTML attribute or element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_the_page_holds_no_inline_script() {
        assert_eq!(
            escape("\"><script>'&"),
            "&quot;&gt;&lt;script&gt;&#39;&amp;"
        );
        let page = PAGE.replace("{{csrf}}", &escape("\"><b>"));
        assert!(page.contains("content=\"&quot;&gt;&lt;b&gt;\""));
        // Scripts only from files (the policy allows no inline one).
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"/console/assets/console.js\" defer></script>"));
        assert!(!page.contains("style="), "no inline style");
        assert!(
            !page
                .split_whitespace()
                .any(|word| word.starts_with("on") && word.contains('=')),
            "no inline event handler"
        );
    }
}
