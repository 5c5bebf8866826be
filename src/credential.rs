//! Credential sources: where a request carries its key, read the same way from either of
//! Envoy's header encodings. A new source (a header is configuration, `credentials.sources`;
//! another place, such as a cookie or a client certificate) starts here: [`credential`] is
//! what the Check path asks, and [`Presented`] what it gets.

mod sources;

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;

/// The request headers Envoy sent: by default the `headers` map (repeated headers joined with
/// commas), or with the filter's `encode_raw_headers: true` the `header_map` list, one entry
/// per header line, values as raw bytes. Envoy fills one or the other, never both.
#[derive(Debug, Clone, Copy)]
pub enum RequestHeaders<'a> {
    Map(&'a HashMap<String, String>),
    Raw(&'a [HeaderValue]),
}

/// One header's value, read the same way from either encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRead<'a> {
    Absent,
    Value(&'a str),
    /// Sent more than once in the raw encoding, or not UTF-8: nothing keyward may act on. A
    /// credential read this way is a malformed one, and a condition on it cannot hold.
    Unusable,
}

impl<'a> RequestHeaders<'a> {
    /// The value of header `name` (lower case, as Envoy sends names).
    pub fn get(&self, name: &str) -> HeaderRead<'a> {
        match self {
            RequestHeaders::Map(map) => map
                .get(name)
                .map_or(HeaderRead::Absent, |v| HeaderRead::Value(v)),
            RequestHeaders::Raw(list) => {
                let mut lines = list.iter().filter(|h| h.key == name);
                match (lines.next(), lines.next()) {
                    (None, _) => HeaderRead::Absent,
                    (Some(_), Some(_)) => HeaderRead::Unusable,
                    // Envoy puts the bytes in `raw_value`; `value` is for other producers.
                    (Some(line), None) if line.raw_value.is_empty() => {
                        HeaderRead::Value(&line.value)
                    }
                    (Some(line), None) => std::str::from_utf8(&line.raw_value)
                        .map_or(HeaderRead::Unusable, HeaderRead::Value),
                }
            }
        }
    }
}

/// What the request presents as its credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    Token(&'a str),
    /// A credential header keyward cannot read ([`HeaderRead::Unusable`]): a malformed token.
    Unreadable,
}

/// The first credential found in the configured sources ([`sources::token_in`]).
pub fn credential<'a>(headers: RequestHeaders<'a>, sources: &[String]) -> Option<Presented<'a>> {
    sources.iter().find_map(|source| {
        let value = match headers.get(source) {
            HeaderRead::Absent => return None,
            HeaderRead::Unusable => return Some(Presented::Unreadable),
            HeaderRead::Value(value) => value,
        };
        sources::token_in(source, value).map(Presented::Token)
    })
}

pub use sources::bearer;

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sources() -> Vec<String> {
        vec![
            "authorization".into(),
            "x-api-key".into(),
            "x-auth-token".into(),
        ]
    }

    /// `credential` over the map encoding, as a plain token.
    fn token_in(pairs: &[(&str, &str)], sources: &[String]) -> Option<String> {
        let map = headers(pairs);
        match credential(RequestHeaders::Map(&map), sources)? {
            Presented::Token(token) => Some(token.to_owned()),
            Presented::Unreadable => panic!("the map encoding is always readable"),
        }
    }

    fn raw(pairs: &[(&str, &[u8])]) -> Vec<HeaderValue> {
        pairs
            .iter()
            .map(|(k, v)| HeaderValue {
                key: k.to_string(),
                value: String::new(),
                raw_value: v.to_vec(),
            })
            .collect()
    }

    #[test]
    fn raw_headers_read_like_the_map_and_refuse_what_is_ambiguous() {
        let s = sources();
        let lines = raw(&[("x-api-key", b"k1"), ("user-agent", b"openai-python/1.40")]);
        let headers = RequestHeaders::Raw(&lines);
        assert_eq!(credential(headers, &s), Some(Presented::Token("k1")));
        assert_eq!(
            headers.get("user-agent"),
            HeaderRead::Value("openai-python/1.40")
        );
        assert_eq!(headers.get("x-auth-token"), HeaderRead::Absent);

        // Two keys in one request: malformed, as the map's joined "k1,k2" is.
        let twice = raw(&[("x-api-key", b"k1"), ("x-api-key", b"k2")]);
        assert_eq!(
            credential(RequestHeaders::Raw(&twice), &s),
            Some(Presented::Unreadable)
        );
        let binary = raw(&[("authorization", b"Bearer \xff\xfe")]);
        assert_eq!(
            credential(RequestHeaders::Raw(&binary), &s),
            Some(Presented::Unreadable)
        );
        // A producer that fills `value` rather than `raw_value`.
        let plain = [HeaderValue {
            key: "authorization".into(),
            value: "Bearer abc".into(),
            raw_value: Vec::new(),
        }];
        assert_eq!(
            credential(RequestHeaders::Raw(&plain), &s),
            Some(Presented::Token("abc"))
        );
    }

    #[test]
    fn credentials_come_from_the_configured_sources_in_order() {
        let s = sources();
        assert_eq!(
            token_in(&[("authorization", "Bearer abc")], &s),
            Some("abc".into())
        );
        assert_eq!(
            token_in(&[("authorization", "bearer  abc ")], &s),
            Some("abc".into())
        );
        assert_eq!(token_in(&[("authorization", "Basic abc")], &s), None);
        assert_eq!(token_in(&[("authorization", "Bearer ")], &s), None);
        assert_eq!(
            token_in(&[("x-api-key", "k1"), ("x-auth-token", "k2")], &s),
            Some("k1".into())
        );
        assert_eq!(token_in(&[("x-auth-token", "k2")], &s), Some("k2".into()));
        assert_eq!(
            token_in(&[("x-auth-token", "k2")], &["x-api-key".to_string()]),
            None
        );
        assert_eq!(token_in(&[], &s), None);
    }
}
