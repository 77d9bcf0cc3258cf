//! The served OpenAPI document, finished in one place: every error status an operation can
//! answer is listed with the error body's schema, from what the layers and extractors do
//! (rather than repeated by hand on each handler):
//!
//! - a bearer-protected operation may answer 401 (no or bad credentials), 403 (the caller
//!   lacks the ability or role) and 429 (the per-credential rate limit, with Retry-After);
//! - an operation with a request body may answer 413 (too large) and 422 (a field is wrong);
//! - an operation with query parameters may answer 422 (a parameter is wrong);
//! - an operation with path parameters may answer 404 (no such id, or a malformed one).
//!
//! Responses a handler declared without a body get the error body when they are errors, and
//! every response gets a description. Operation ids are made unique from method and path.

use utoipa::PartialSchema;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder, header::HeaderBuilder,
    schema::Type,
};

use super::error::ErrorBody;

/// What each status means, as the document says it.
fn describe(status: &str) -> &'static str {
    match status {
        "200" => "Success",
        "201" => "Created",
        "202" => "Accepted: a task was queued",
        "204" => "Done; no content",
        "400" => "Bad request",
        "401" => "No credentials, or wrong or expired ones",
        "403" => "The caller may not do this (role, ability, or account state)",
        "404" => "No such resource",
        "409" => "Conflicts with the resource's state",
        "413" => "The request body is too large",
        "422" => "A field or parameter is wrong; `errors` names each",
        "429" => "Too many requests or failed attempts; retry after `Retry-After` seconds",
        "503" => "Temporarily unavailable",
        _ => "See the message",
    }
}

/// Finishes `doc` as the module header says.
pub fn finish(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components
        .schemas
        .insert("ErrorBody".into(), <ErrorBody as PartialSchema>::schema());
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op {
                finish_operation(method, path, op);
            }
        }
    }
}

fn finish_operation(method: &str, path: &str, op: &mut Operation) {
    let id: String = format!("{method}{path}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .split('_')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_");
    op.operation_id = Some(id);

    let params = op.parameters.as_deref().unwrap_or_default();
    let has = |place: ParameterIn| {
        params
            .iter()
            .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == place))
    };
    let mut errors: Vec<&str> = vec![];
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        errors.extend(["401", "403", "429"]);
    }
    if op.request_body.is_some() {
        errors.extend(["413", "422"]);
    }
    if has(ParameterIn::Query) {
        errors.push("422");
    }
    if has(ParameterIn::Path) {
        errors.push("404");
    }
    // Parameters are documented as given; a path parameter is always required.
    if let Some(params) = op.parameters.as_mut() {
        for p in params.iter_mut() {
            if let RefOr::T(p) = p
                && p.parameter_in == ParameterIn::Path
            {
                p.required = Required::True;
            }
        }
    }
    let responses = &mut op.responses.responses;
    for status in errors {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().build()));
    }
    for (status, response) in responses.iter_mut() {
        let RefOr::T(r) = response else { continue };
        if r.description.is_empty() {
            r.description = describe(status).to_string();
        }
        let is_error = status.starts_with('4') || status.starts_with('5');
        if is_error && r.content.is_empty() {
            r.content.insert(
                "application/json".into(),
                RefOr::T(
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(Ref::from_schema_name("ErrorBody"))))
                        .build(),
                ),
            );
        }
        if status == "429" && !r.headers.contains_key("Retry-After") {
            r.headers.insert(
                "Retry-After".into(),
                RefOr::T(
                    HeaderBuilder::new()
                        .schema(Some(utoipa::openapi::schema::Object::with_type(
                            Type::Integer,
                        )))
                        .description(Some("Seconds to wait before trying again"))
                        .build(),
                ),
            );
        }
    }
}
