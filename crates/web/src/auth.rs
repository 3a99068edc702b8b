//! Who may use the page: a secret token, given once in the URL and kept
//! after that in an `HttpOnly`, `SameSite=Strict` cookie; and, for every
//! request that changes anything, an `Origin` that is the page's own, so a
//! page from another site cannot act through a logged-in browser.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::Shared;

/// The file under the state directory that keeps the token (mode 0600).
pub const TOKEN_FILE: &str = "web-token";

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The cookie's name: per port, since browsers share cookies between the
/// ports of one host, and two `bpm web`s (two state directories) may run.
pub(super) fn cookie_name(port: u16) -> String {
    format!("bpm_web_{port}")
}

fn cookie_token<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

fn refused(status: StatusCode, why: &str, html: bool) -> Response {
    if html {
        let page = format!(
            "<!doctype html><meta charset=utf-8><title>bpm</title><body><h1>bpm</h1><p>{why}</p></body>"
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            page,
        )
            .into_response()
    } else {
        (status, axum::Json(serde_json::json!({ "error": why }))).into_response()
    }
}

/// Whether a request that changes something comes from the page itself:
/// its `Origin` is this server as the browser reached it (`Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            same(origin, &format!("http://{host}")) || same(origin, &format!("https://{host}"))
        }
        _ => false,
    }
}

/// Lets through a request that carries the token; exchanges a token in the
/// URL for the cookie; refuses the rest. Changes need the page's own origin,
/// and are refused in read-only mode.
pub(super) async fn guard(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let html = request.uri().path() == "/" || !request.uri().path().starts_with("/api/");
    let name = cookie_name(shared.port);
    if request.method() == Method::GET
        && let Some(given) = query_token(request.uri().query())
    {
        if !same(given, &shared.config.token) {
            return refused(
                StatusCode::UNAUTHORIZED,
                "This link's token is wrong or old: open the URL that <code>bpm web</code> printed.",
                true,
            );
        }
        // The token leaves the address bar at once; the cookie carries it from now on.
        let cookie = format!(
            "{name}={}; HttpOnly; SameSite=Strict; Path=/",
            shared.config.token
        );
        let mut response = Redirect::to(request.uri().path()).into_response();
        if let Ok(v) = cookie.parse() {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
        return response;
    }
    if !cookie_token(headers, &name).is_some_and(|t| same(t, &shared.config.token)) {
        return refused(
            StatusCode::UNAUTHORIZED,
            "This page needs bpm's token: open the URL that <code>bpm web</code> printed (it ends in <code>?token=…</code>).",
            html,
        );
    }
    let changes = !matches!(*request.method(), Method::GET | Method::HEAD);
    if changes {
        if !same_origin(headers) {
            return refused(
                StatusCode::FORBIDDEN,
                "cross-origin request refused: changes are accepted only from bpm's own page",
                false,
            );
        }
        if shared.config.read_only {
            return refused(
                StatusCode::FORBIDDEN,
                "this bpm web is read-only: it shows processes but changes nothing",
                false,
            );
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_the_pages_own() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8080".parse().expect("host"));
        assert!(!same_origin(&h), "no Origin is refused");
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().expect("o"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().expect("o"));
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, "null".parse().expect("o"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn cookies_and_queries_are_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; bpm_web_80=tok; b=2".parse().expect("c"),
        );
        assert_eq!(cookie_token(&h, "bpm_web_80"), Some("tok"));
        assert_eq!(cookie_token(&h, "bpm_web_81"), None);
        assert_eq!(query_token(Some("x=1&token=abc")), Some("abc"));
        assert_eq!(query_token(None), None);
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
    }
}
