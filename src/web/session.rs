//! Browser sessions: the login token in an HttpOnly, SameSite=Strict cookie (under https,
//! Secure and named with the `__Host-` prefix, so no other host of the domain can set it),
//! never in a URL; a CSRF token derived from that cookie (another origin
//! can neither read the cookie nor compute the token) on every form; and the Origin check on
//! every state-changing request and on the event stream.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::api::extract::ClientIp;
use crate::auth::Principal;
use crate::ops::{Caller, Face};

/// The session cookie's name over plain http.
pub const COOKIE: &str = "sluice_session";
/// Its name under https: the browser takes it only from this very host, over https, for the
/// whole site, so a sibling subdomain cannot plant a session.
pub const SECURE_COOKIE: &str = "__Host-sluice_session";

/// Whether this site's cookies are https-only: the request came over https (directly, or as a
/// trusted proxy says), or the public URL is https.
pub fn secure(public_url: Option<&str>, client: Option<&crate::api::client::Client>) -> bool {
    client.is_some_and(|c| c.https) || public_url.is_some_and(|u| u.starts_with("https://"))
}

fn name(secure: bool) -> &'static str {
    if secure { SECURE_COOKIE } else { COOKIE }
}

/// A signed-in browser: the principal behind the cookie, and the cookie's CSRF token.
#[derive(Clone)]
pub struct WebUser {
    pub caller: Caller,
    pub csrf: String,
    /// Whether the session's cookie is the https one (`__Host-`, Secure).
    pub secure: bool,
}

impl WebUser {
    pub fn is_admin(&self) -> bool {
        self.caller.principal.can(crate::auth::Ability::All)
    }
    pub fn name(&self) -> String {
        match &self.caller.principal {
            Principal::Account { username, .. } => username.clone(),
            other => other.actor(),
        }
    }
}

/// The CSRF token of a session: a hash of the session cookie's value.
pub fn csrf_token(cookie_value: &str) -> String {
    let digest = Sha256::digest(format!("sluice-csrf:{cookie_value}").as_bytes());
    hex::encode(&digest[..16])
}

/// The session cookie a request carries: under https only the `__Host-` one counts.
fn cookie_value(headers: &HeaderMap, secure: bool) -> Option<String> {
    let want = name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == want)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// Whether a request comes from this site: an `Origin` naming the Host it was sent to (or the
/// public URL), or none at all with `Sec-Fetch-Site` same-origin or absent (not a browser).
pub fn same_origin(headers: &HeaderMap, public_url: Option<&str>) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        Some(origin) => {
            let authority = origin.split_once("://").map(|(_, a)| a);
            authority.is_some() && authority == host
                || public_url.is_some_and(|u| u.trim_end_matches('/') == origin)
        }
        None => matches!(
            headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()),
            None | Some("same-origin") | Some("none")
        ),
    }
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(token: &str, secure: bool) -> HeaderValue {
    let flag = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200{flag}",
        name(secure)
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("sluice_session=; Path=/; Max-Age=0"))
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    if secure {
        HeaderValue::from_static(
            "__Host-sluice_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure",
        )
    } else {
        HeaderValue::from_static("sluice_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    }
}

/// Without a valid session: to the login page.
pub struct SignIn;

impl IntoResponse for SignIn {
    fn into_response(self) -> Response {
        Redirect::to("/login").into_response()
    }
}

impl FromRequestParts<AppState> for WebUser {
    type Rejection = SignIn;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, SignIn> {
        let client = parts.extensions.get::<crate::api::client::Client>();
        let secure = secure(state.public_url.as_deref(), client);
        let value = cookie_value(&parts.headers, secure).ok_or(SignIn)?;
        // Only login tokens live in cookies; an API token is never accepted from one.
        if crate::auth::tokens::looks_like_token(&value) {
            return Err(SignIn);
        }
        let principal = state.auth.authenticate(&value).await.map_err(|_| SignIn)?;
        let ip = ClientIp::from_request_parts(parts, state)
            .await
            .unwrap_or(ClientIp(None));
        Ok(WebUser {
            caller: Caller::new(principal, ip.to_option_string(), Face::Web),
            csrf: csrf_token(&value),
            secure,
        })
    }
}

impl OptionalFromRequestParts<AppState> for WebUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <WebUser as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_this_site_passes_the_origin_check() {
        let ok = headers(&[
            ("host", "sluice.test:8080"),
            ("origin", "http://sluice.test:8080"),
        ]);
        assert!(same_origin(&ok, None));
        let other = headers(&[("host", "sluice.test:8080"), ("origin", "http://evil.test")]);
        assert!(!same_origin(&other, None));
        let null = headers(&[("host", "sluice.test:8080"), ("origin", "null")]);
        assert!(!same_origin(&null, None));
        let cross = headers(&[("host", "sluice.test"), ("sec-fetch-site", "cross-site")]);
        assert!(!same_origin(&cross, None));
        let proxied = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://sluice.example"),
        ]);
        assert!(same_origin(&proxied, Some("https://sluice.example/")));
    }

    #[test]
    fn the_cookie_is_read_among_others_and_the_csrf_token_follows_it() {
        let h = headers(&[("cookie", "a=1; sluice_session=abc.def; b=2")]);
        assert_eq!(cookie_value(&h, false).as_deref(), Some("abc.def"));
        // Under https only the __Host- cookie counts: a plain one (which another host of the
        // domain could have set) is no session there.
        assert_eq!(cookie_value(&h, true), None);
        let h = headers(&[("cookie", "sluice_session=x; __Host-sluice_session=abc.def")]);
        assert_eq!(cookie_value(&h, true).as_deref(), Some("abc.def"));
        assert!(
            set_cookie("t", true)
                .to_str()
                .unwrap()
                .starts_with("__Host-sluice_session=t; Path=/;")
        );
        assert!(clear_cookie(true).to_str().unwrap().contains("; Secure"));
        assert_eq!(csrf_token("abc.def"), csrf_token("abc.def"));
        assert_ne!(csrf_token("abc.def"), csrf_token("abc.deg"));
        let c = set_cookie("t", false);
        let c = c.to_str().unwrap();
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie("t", true).to_str().unwrap().contains("; Secure"));
    }
}
