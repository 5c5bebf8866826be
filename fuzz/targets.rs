//! The fuzz targets' bodies, shared by the libFuzzer entries (`fuzz/fuzz_targets/`) and the
//! suite's replay of saved crashing inputs (`tests/fuzz_regressions.rs`). Each takes arbitrary
//! bytes, feeds them to one of keyward's parsers and panics only when a property that must
//! hold for every input does not: a panic inside keyward is a finding too.

#![allow(dead_code)]

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::address::Address;
use envoy_types::pb::envoy::config::core::v3::{
    Address as EnvoyAddress, HeaderMap, HeaderValue, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use prost::Message;

/// The token parser: never panics, and a parsed token's `Debug` never shows its secret.
pub fn token(data: &[u8]) {
    let Ok(presented) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(token) = keyward::token::Token::parse(presented) {
        assert!(presented.contains(token.secret()));
        assert_eq!(token.cache_key(), token.cache_key());
        assert!(
            !format!("{token:?}").contains(token.secret()),
            "a token's Debug shows its secret"
        );
    }
}

/// `CheckRequest` → decision input, both from raw protobuf bytes (first byte even) and from a
/// request assembled out of the bytes (odd: path, method, headers in either of Envoy's
/// encodings, context extensions, source address).
pub fn check_request(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let request = if mode % 2 == 0 {
        match CheckRequest::decode(rest) {
            Ok(request) => request,
            Err(_) => return,
        }
    } else {
        assemble(mode, rest)
    };
    decide_input(&request);
}

fn assemble(mode: u8, data: &[u8]) -> CheckRequest {
    let text = |part: &[u8]| String::from_utf8_lossy(part).into_owned();
    let mut parts = data.split(|&b| b == 0xff);
    let path = parts.next().map(text).unwrap_or_default();
    let method = parts.next().map(text).unwrap_or_default();
    let source = parts.next().map(text).unwrap_or_default();
    let mut extensions = HashMap::new();
    if mode & 0b10 != 0 {
        for name in ["plane", "endpoint", "deployment", "project"] {
            if let Some(value) = parts.next() {
                extensions.insert(name.to_owned(), text(value));
            }
        }
    }
    let mut headers = HashMap::new();
    let mut raw = Vec::new();
    while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
        if mode & 0b100 != 0 {
            raw.push(HeaderValue {
                key: text(name),
                raw_value: value.to_vec(),
                ..Default::default()
            });
        } else {
            headers.insert(text(name), text(value));
        }
    }
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(EnvoyAddress {
                    address: Some(Address::SocketAddress(SocketAddress {
                        address: source,
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method,
                    path,
                    headers,
                    header_map: (!raw.is_empty()).then_some(HeaderMap { headers: raw }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: extensions,
            ..Default::default()
        }),
    }
}

fn decide_input(request: &CheckRequest) {
    let _ = keyward::authz::needs_route_table(request);
    if let Some(path) = request
        .attributes
        .as_ref()
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .map(|h| h.path.as_str())
    {
        let _ = keyward::authz::control_target(path);
    }
    let Ok(input) = keyward::authz::input_of(request) else {
        return;
    };
    let sources: Vec<String> = ["authorization", "x-api-key", "x-auth-token"]
        .map(String::from)
        .to_vec();
    if let Some(keyward::credential::Presented::Token(token)) =
        keyward::credential::credential(input.headers, &sources)
    {
        assert!(!token.is_empty(), "an empty credential was read as a token");
        assert_eq!(
            token,
            token.trim(),
            "a credential kept surrounding white space"
        );
    }
}

/// The `apply` file parser: never panics; a file that parses and resolves exports to a file
/// that parses again.
pub fn apply_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = match keyward::declare::parse(text) {
        Ok(file) => file,
        Err(e) => {
            assert!(e.line >= 1, "an error located on line 0");
            return;
        }
    };
    let Ok(state) = file.resolve(&Default::default(), false) else {
        return;
    };
    let exported = keyward::declare::render(&state);
    if let Err(e) = keyward::declare::parse(&exported) {
        panic!("an exported state does not parse again: {e:?}\n{exported}");
    }
}

/// The CLI's expiry and grace parsers and the config file parser: never panic, and what they
/// accept is in range.
pub fn durations(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = keyward::cli::parse_expiry(text);
    if let Ok(seconds) = keyward::cli::parse_grace(text) {
        assert!(seconds <= 30 * 86_400, "a grace above 30 days was accepted");
    }
    if let Ok(mut config) = keyward::config::Config::from_toml(text) {
        let _ = config.validate();
    }
}
