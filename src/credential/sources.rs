//! The credential sources' rules, free of any dependency: keyward's Check path and the Envoy
//! module (`module/`, which includes this file by path) read a request's credential the same
//! way. Headers are tried in the configured order; `authorization` must use the Bearer scheme,
//! other headers carry the bare token; empty values count as absent.

/// The token a header `source` carries in `value`, or `None` when the value does not count as a
/// credential (empty, or `authorization` without the Bearer scheme): the next source is tried.
pub fn token_in<'a>(source: &str, value: &'a str) -> Option<&'a str> {
    let value = value.trim();
    let token = if source == "authorization" {
        bearer(value)?
    } else {
        value
    };
    (!token.is_empty()).then_some(token)
}

/// The token of an `authorization: Bearer <token>` value (scheme case-insensitive).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
