//! Extractors: JSON bodies that fail as 422 naming the field, pagination, the client address,
//! and the authorization checks each route declares in its signature.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::auth::{Ability, Principal};
use crate::store::PageRequest;
use crate::validation::FieldErrors;

/// A JSON body. An empty body reads as `{}`; a malformed one is a 422 naming the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge(super::BODY_LIMIT)
            } else {
                ApiError::field("body", "could not be read")
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let de = &mut serde_json::Deserializer::from_slice(text);
        serde_path_to_error::deserialize(de)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = inner.to_string();
                // "missing field `x` at line.." names the field inside the message.
                let field = match msg.split('`').nth(1) {
                    Some(f) if msg.starts_with("missing field") => {
                        if path == "." {
                            f.to_string()
                        } else {
                            format!("{path}.{f}")
                        }
                    }
                    _ if path == "." => "body".to_string(),
                    _ => path,
                };
                let clean = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                let clean = if inner.is_syntax() || inner.is_eof() {
                    format!("is not valid JSON: {clean}")
                } else {
                    clean
                };
                ApiError::invalid(FieldErrors::one(field, clean))
            })
    }
}

/// Query parameters as a map, for routes that validate them by hand.
pub fn query_map(parts: &Parts) -> BTreeMap<String, String> {
    parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .map(|v| v.into_iter().collect())
        .unwrap_or_default()
}

/// Default and maximum page sizes.
pub const PER_PAGE_DEFAULT: u32 = 15;
pub const PER_PAGE_MAX: u32 = 100;

/// `?page` and `?per_page`, validated, with what is needed to build page links.
#[derive(Debug, Clone)]
pub struct Paging {
    pub req: PageRequest,
    path: String,
    other: Vec<(String, String)>,
}

impl Paging {
    /// Reads paging from a query map; `max` bounds `per_page`.
    pub fn from_query(
        path: &str,
        q: &BTreeMap<String, String>,
        max: u32,
    ) -> Result<Self, ApiError> {
        let mut errs = FieldErrors::new();
        let page = match q.get("page") {
            None => 1,
            Some(s) => match s.parse::<u32>() {
                Ok(p) if p >= 1 => p,
                _ => {
                    errs.add("page", "must be a whole number of 1 or more");
                    1
                }
            },
        };
        let per_page = match q.get("per_page") {
            None => PER_PAGE_DEFAULT.min(max),
            Some(s) => match s.parse::<u32>() {
                Ok(p) if (1..=max).contains(&p) => p,
                _ => {
                    errs.add(
                        "per_page",
                        format!("must be a whole number from 1 to {max}"),
                    );
                    1
                }
            },
        };
        if !errs.is_empty() {
            return Err(ApiError::invalid(errs));
        }
        Ok(Paging {
            req: PageRequest { page, per_page },
            path: path.to_string(),
            other: q
                .iter()
                .filter(|(k, _)| *k != "page" && *k != "per_page")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The URL of page `n` with the same filters.
    pub fn link(&self, n: u32) -> String {
        let mut pairs = self.other.clone();
        pairs.push(("page".into(), n.to_string()));
        pairs.push(("per_page".into(), self.req.per_page.to_string()));
        let q = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        format!("{}?{q}", self.path)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Paging::from_query(parts.uri.path(), &query_map(parts), PER_PAGE_MAX)
    }
}

/// The caller's address, as the TCP peer (proxies in front are not trusted).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl ClientIp {
    pub fn to_option_string(self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// A route's required ability, as a type.
pub trait RequiredAbility: Send + Sync + 'static {
    const ABILITY: Ability;
}

macro_rules! abilities {
    ($($name:ident => $ability:ident),* $(,)?) => {
        /// Marker types naming the ability an admin route requires.
        pub mod can {
            use super::{Ability, RequiredAbility};
            $(
                pub struct $name;
                impl RequiredAbility for $name { const ABILITY: Ability = Ability::$ability; }
            )*
        }
    };
}

abilities! {
    UserRead => UserRead, UserWrite => UserWrite,
    HostRead => HostRead, HostWrite => HostWrite,
    EgressRead => EgressRead, EgressWrite => EgressWrite, EgressTest => EgressTest,
    TaskRead => TaskRead, EventRead => EventRead, TokenWrite => TokenWrite,
    MetricsRead => MetricsRead, SessionRead => SessionRead,
}

/// An admin-route caller holding ability `A`: an administrator, or a token given `A`.
/// Without credentials: 401. A user, or a token without `A`: 403.
pub struct Admin<A> {
    pub principal: Principal,
    pub ip: ClientIp,
    _ability: PhantomData<A>,
}

impl<A> Admin<A> {
    pub fn actor(&self) -> String {
        self.principal.actor()
    }
    /// The caller as the domain operations take it.
    pub fn caller(&self) -> crate::ops::Caller {
        crate::ops::Caller::new(self.principal.clone(), self.source(), crate::ops::Face::Api)
    }
    pub fn source(&self) -> Option<String> {
        self.ip.to_option_string()
    }
}

fn principal(parts: &Parts) -> Result<Principal, ApiError> {
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthorized("missing bearer credentials".into()))
}

impl<S: Send + Sync, A: RequiredAbility> FromRequestParts<S> for Admin<A> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        // The rule is the domain's: the same check every face makes.
        crate::ops::Caller::new(p.clone(), None, crate::ops::Face::Api).require(A::ABILITY)?;
        let ip = ClientIp::from_request_parts(parts, state)
            .await
            .unwrap_or(ClientIp(None));
        Ok(Admin {
            principal: p,
            ip,
            _ability: PhantomData,
        })
    }
}

/// Any authenticated caller (administrator, user or token), as the domain takes it.
pub struct Authed(pub crate::ops::Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        let ip = ClientIp::from_request_parts(parts, state)
            .await
            .unwrap_or(ClientIp(None));
        Ok(Authed(crate::ops::Caller::new(
            p,
            ip.to_option_string(),
            crate::ops::Face::Api,
        )))
    }
}

/// A user-portal caller: a logged-in user (not an administrator, not a token).
pub struct UserCaller {
    pub id: Uuid,
    pub principal: Principal,
    pub ip: ClientIp,
}

impl UserCaller {
    pub fn actor(&self) -> String {
        self.principal.actor()
    }
    /// The caller as the domain operations take it.
    pub fn caller(&self) -> crate::ops::Caller {
        crate::ops::Caller::new(self.principal.clone(), self.source(), crate::ops::Face::Api)
    }
    pub fn source(&self) -> Option<String> {
        self.ip.to_option_string()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UserCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let p = principal(parts)?;
        let Some(id) = p.user_id() else {
            return Err(ApiError::Forbidden(
                "user portal routes are for user accounts".into(),
            ));
        };
        let ip = ClientIp::from_request_parts(parts, state)
            .await
            .unwrap_or(ClientIp(None));
        Ok(UserCaller {
            id,
            principal: p,
            ip,
        })
    }
}

/// Parses a path id, answering 404 (not 400) for anything that is not a UUID.
pub fn parse_id(s: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(s).map_err(|_| ApiError::NotFound(what))
}
