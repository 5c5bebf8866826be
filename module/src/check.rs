//! keyward's Check, called by the module itself on a miss, over the ext_authz cluster: the
//! request ext_authz would send (`envoy.service.auth.v3.CheckRequest`, gRPC-framed) and what
//! keyward's answer asks of the request, read as ext_authz reads it.
//!
//! On a route with a keyward context the module is the only authorizer (the template does not
//! even create ext_authz there), so this is where such a route fails closed: an answer that
//! is not a well-formed `CheckResponse` with an OK or a denial is an error, and an error is a
//! 503, as ext_authz's `status_on_error`.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{
    Address, HeaderMap, HeaderValue, HeaderValueOption, SocketAddress,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest, CheckResponse};
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Message;

/// keyward's Check, as gRPC names it.
pub const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// What a route's keyward context (`data|<endpoint>|<project>/<deployment>`) tells keyward, as
/// the context extensions ext_authz would send for that route.
pub fn context_extensions(context: &str) -> Option<HashMap<String, String>> {
    let mut parts = context.split('|');
    let (plane, endpoint, deployment) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || plane != "data" || deployment.is_empty() {
        return None;
    }
    Some(HashMap::from([
        ("plane".to_owned(), plane.to_owned()),
        ("endpoint".to_owned(), endpoint.to_owned()),
        ("deployment".to_owned(), deployment.to_owned()),
    ]))
}

/// What the module sends keyward about one request.
pub struct Asked<'a> {
    pub context: &'a str,
    pub method: &'a [u8],
    pub path: &'a [u8],
    pub host: &'a [u8],
    /// `ip:port`, as Envoy's `source.address`.
    pub source: Option<&'a str>,
    /// The headers keyward reads (the credential sources and `user-agent`), each occurrence on
    /// its own: a credential sent twice reaches keyward as sent, and keyward refuses it.
    pub headers: Vec<(&'a [u8], &'a [u8])>,
}

/// The gRPC-framed `CheckRequest` for `asked`; `None` when the context is not a data route's.
pub fn request_body(asked: &Asked<'_>) -> Option<Vec<u8>> {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let source = asked.source.and_then(|address| {
        let (ip, port) = split_address(address)?;
        Some(Peer {
            address: Some(Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address: ip.to_owned(),
                    port_specifier: Some(
                        envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port),
                    ),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })
    });
    let headers = asked
        .headers
        .iter()
        .map(|(name, value)| HeaderValue {
            key: text(name).to_ascii_lowercase(),
            value: String::new(),
            raw_value: value.to_vec(),
        })
        .collect();
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            source,
            request: Some(Request {
                http: Some(HttpRequest {
                    method: text(asked.method),
                    path: text(asked.path),
                    host: text(asked.host),
                    header_map: Some(HeaderMap { headers }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            context_extensions: context_extensions(asked.context)?,
            ..Default::default()
        }),
    };
    let len = request.encoded_len();
    let mut body = Vec::with_capacity(5 + len);
    body.push(0);
    body.extend_from_slice(&(len as u32).to_be_bytes());
    request.encode(&mut body).ok()?;
    Some(body)
}

/// Envoy's `source.address` as IP and port: `1.2.3.4:5` → (`1.2.3.4`, 5), `[::1]:5` →
/// (`::1`, 5), a bare IP → port 0; an address that is no IP (a Unix socket) gives `None`.
pub fn split_address(address: &str) -> Option<(&str, u32)> {
    let (ip, port) = match address.strip_prefix('[') {
        Some(rest) => {
            let (ip, port) = rest.split_once(']')?;
            (ip, port.strip_prefix(':').unwrap_or(port))
        }
        None => match address.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') => (ip, port),
            _ => (address, ""),
        },
    };
    ip.parse::<std::net::IpAddr>().ok()?;
    let port = match port {
        "" => 0,
        port => port.parse().ok()?,
    };
    Some((ip, port))
}

/// A dynamic metadata value of keyward's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    Text(String),
    Number(f64),
    Flag(bool),
}

/// What keyward's answer asks of the request.
#[derive(Debug, Default, PartialEq)]
pub struct Allow {
    /// Request headers to set (`true`: over any the request has) or to add beside them.
    pub set: Vec<(String, Vec<u8>, bool)>,
    pub remove: Vec<String>,
    /// Response headers to add when the response starts.
    pub response_headers: Vec<(String, Vec<u8>)>,
    /// keyward's `x-keyward-module` for this allow (what the module may reuse), taken out of the
    /// response headers: it is for the module, never for the client.
    pub learnable: Option<String>,
}

#[derive(Debug, PartialEq)]
pub enum Answer {
    Allow(Allow),
    Deny {
        status: u32,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
}

/// keyward's answer with its dynamic metadata (for Envoy's access log, under ext_authz's
/// namespace, as ext_authz would emit it).
#[derive(Debug, PartialEq)]
pub struct Decided {
    pub answer: Answer,
    pub metadata: Vec<(String, MetadataValue)>,
}

/// Why an answer could not be used (the request then fails closed).
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth asking another replica: the call did not reach a keyward that answered, or
    /// keyward said it is unavailable (draining, overloaded).
    Retryable(&'static str),
    Final(&'static str),
}

/// gRPC status UNAVAILABLE: what a draining or overloaded keyward answers.
const GRPC_UNAVAILABLE: &[u8] = b"14";

/// Reads keyward's answer: the callout's response headers (`:status`, and `grpc-status` when
/// gRPC answered with headers only) and its body (one gRPC-framed `CheckResponse`).
pub fn read_answer(
    headers: &[(&[u8], &[u8])],
    body: &[u8],
    learn_header: &str,
) -> Result<Decided, Failure> {
    let header = |name: &[u8]| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    match header(b":status") {
        Some(b"200") => {}
        Some(b"502" | b"503" | b"504") => return Err(Failure::Retryable("keyward unavailable")),
        _ => return Err(Failure::Final("keyward answered HTTP other than 200")),
    }
    match header(b"grpc-status") {
        None | Some(b"0") => {}
        Some(GRPC_UNAVAILABLE) => return Err(Failure::Retryable("keyward unavailable")),
        Some(_) => return Err(Failure::Final("keyward answered a gRPC error")),
    }
    let message =
        unframe(body).ok_or(Failure::Final("keyward's answer is not one gRPC message"))?;
    let response = CheckResponse::decode(message)
        .map_err(|_| Failure::Final("keyward's answer is not a CheckResponse"))?;
    decided(response, learn_header)
}

fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    (rest.len() == 4 + len).then(|| &rest[4..])
}

fn decided(response: CheckResponse, learn_header: &str) -> Result<Decided, Failure> {
    let metadata = response
        .dynamic_metadata
        .map(|s| s.fields)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, value)| {
            Some((
                name,
                match value.kind? {
                    Kind::StringValue(text) => MetadataValue::Text(text),
                    Kind::NumberValue(number) => MetadataValue::Number(number),
                    Kind::BoolValue(flag) => MetadataValue::Flag(flag),
                    _ => return None,
                },
            ))
        })
        .collect();
    let code = response.status.map(|s| s.code).unwrap_or(0);
    let answer = match (code, response.http_response) {
        (0, Some(HttpResponse::OkResponse(ok))) => {
            let mut allow = Allow {
                set: ok.headers.into_iter().filter_map(header_to_set).collect(),
                remove: ok.headers_to_remove,
                ..Allow::default()
            };
            for option in ok.response_headers_to_add {
                let Some((name, value, _)) = header_to_set(option) else {
                    continue;
                };
                if name.eq_ignore_ascii_case(learn_header) {
                    allow.learnable = String::from_utf8(value).ok();
                } else {
                    allow.response_headers.push((name, value));
                }
            }
            Answer::Allow(allow)
        }
        (0, None) => Answer::Allow(Allow::default()),
        (0, Some(_)) => return Err(Failure::Final("keyward allowed with a denial's response")),
        (_, Some(HttpResponse::DeniedResponse(denied))) => Answer::Deny {
            // ext_authz's default for a denial without a status: 403.
            status: denied
                .status
                .map(|s| s.code as u32)
                .filter(|&s| (200..600).contains(&s))
                .unwrap_or(403),
            headers: denied
                .headers
                .into_iter()
                .filter_map(header_to_set)
                .map(|(name, value, _)| (name, value))
                .collect(),
            body: denied.body.into_bytes(),
        },
        (_, _) => Answer::Deny {
            status: 403,
            headers: Vec::new(),
            body: Vec::new(),
        },
    };
    Ok(Decided { answer, metadata })
}

/// A header option as (name, value, overwrite); the raw value wins over the string one, as in
/// Envoy.
fn header_to_set(option: HeaderValueOption) -> Option<(String, Vec<u8>, bool)> {
    let header = option.header?;
    let value = match header.raw_value.is_empty() {
        true => header.value.into_bytes(),
        false => header.raw_value,
    };
    // keyward states `append_action`, never the deprecated `append` flag.
    let overwrite = matches!(
        HeaderAppendAction::try_from(option.append_action),
        Ok(HeaderAppendAction::OverwriteIfExistsOrAdd | HeaderAppendAction::OverwriteIfExists)
    );
    Some((header.key.to_ascii_lowercase(), value, overwrite))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::service::auth::v3::{DeniedHttpResponse, OkHttpResponse};
    use envoy_types::pb::envoy::r#type::v3::HttpStatus;
    use envoy_types::pb::google::protobuf::{Struct, Value};
    use envoy_types::pb::google::rpc::Status;

    fn framed(message: &impl Message) -> Vec<u8> {
        let bytes = message.encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        body.extend_from_slice(&bytes);
        body
    }

    fn option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value: value.into(),
                raw_value: Vec::new(),
            }),
            append_action: action as i32,
            ..Default::default()
        }
    }

    const OK_HEADERS: [(&[u8], &[u8]); 2] =
        [(b":status", b"200"), (b"content-type", b"application/grpc")];

    #[test]
    fn the_request_carries_what_ext_authz_would_send_for_the_route() {
        let asked = Asked {
            context: "data|private|acme/chat",
            method: b"POST",
            path: b"/v1/chat/completions",
            host: b"api.example",
            source: Some("[2001:db8::1]:4242"),
            headers: vec![
                (b"Authorization", b"Bearer a"),
                (b"authorization", b"Bearer b"),
            ],
        };
        let body = request_body(&asked).unwrap();
        let request = CheckRequest::decode(unframe(&body).unwrap()).unwrap();
        let attributes = request.attributes.unwrap();
        assert_eq!(attributes.context_extensions["plane"], "data");
        assert_eq!(attributes.context_extensions["endpoint"], "private");
        assert_eq!(attributes.context_extensions["deployment"], "acme/chat");
        let http = attributes.request.unwrap().http.unwrap();
        assert_eq!(
            (http.method.as_str(), http.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
        let headers = http.header_map.unwrap().headers;
        assert_eq!(
            headers.len(),
            2,
            "a header sent twice reaches keyward twice"
        );
        assert!(headers.iter().all(|h| h.key == "authorization"));
        let peer = attributes.source.unwrap().address.unwrap().address.unwrap();
        let AddressKind::SocketAddress(socket) = peer else {
            panic!()
        };
        assert_eq!(socket.address, "2001:db8::1");

        assert!(
            request_body(&Asked {
                context: "control|public|x",
                ..asked
            })
            .is_none()
        );
    }

    #[test]
    fn an_allow_sets_removes_and_hands_the_module_its_learnable_part() {
        let response = CheckResponse {
            status: Some(Status::default()),
            http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                headers: vec![
                    option(
                        "x-keyward-key-id",
                        "AAAA",
                        HeaderAppendAction::OverwriteIfExistsOrAdd,
                    ),
                    option("x-extra", "1", HeaderAppendAction::AppendIfExistsOrAdd),
                ],
                headers_to_remove: vec!["authorization".into()],
                response_headers_to_add: vec![
                    option(
                        "x-keyward-module",
                        "v1 i 1 2 - data|public|a/b k p a a/b",
                        HeaderAppendAction::OverwriteIfExistsOrAdd,
                    ),
                    option("x-seen", "yes", HeaderAppendAction::AppendIfExistsOrAdd),
                ],
                ..Default::default()
            })),
            dynamic_metadata: Some(Struct {
                fields: [(
                    "key_id".to_owned(),
                    Value {
                        kind: Some(Kind::StringValue("AAAA".into())),
                    },
                )]
                .into(),
            }),
        };
        let decided = read_answer(&OK_HEADERS, &framed(&response), "x-keyward-module").unwrap();
        let Answer::Allow(allow) = decided.answer else {
            panic!("{decided:?}")
        };
        assert_eq!(
            allow.set,
            vec![
                ("x-keyward-key-id".into(), b"AAAA".to_vec(), true),
                ("x-extra".into(), b"1".to_vec(), false)
            ]
        );
        assert_eq!(allow.remove, vec!["authorization".to_owned()]);
        assert_eq!(
            allow.response_headers,
            vec![("x-seen".into(), b"yes".to_vec())]
        );
        assert_eq!(
            allow.learnable.as_deref(),
            Some("v1 i 1 2 - data|public|a/b k p a a/b")
        );
        assert_eq!(
            decided.metadata,
            vec![("key_id".into(), MetadataValue::Text("AAAA".into()))]
        );
    }

    #[test]
    fn a_denial_keeps_keywards_status_headers_and_body() {
        let response = CheckResponse {
            status: Some(Status {
                code: 16,
                ..Default::default()
            }),
            http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                status: Some(HttpStatus { code: 401 }),
                headers: vec![option(
                    "www-authenticate",
                    "Bearer",
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                )],
                body: "{\"error\":{}}".into(),
            })),
            dynamic_metadata: None,
        };
        let decided = read_answer(&OK_HEADERS, &framed(&response), "x-keyward-module").unwrap();
        assert_eq!(
            decided.answer,
            Answer::Deny {
                status: 401,
                headers: vec![("www-authenticate".into(), b"Bearer".to_vec())],
                body: b"{\"error\":{}}".to_vec()
            }
        );
    }

    #[test]
    fn anything_but_a_well_formed_answer_fails_closed() {
        let ok = framed(&CheckResponse::default());
        let read = |headers: &[(&[u8], &[u8])], body: &[u8]| read_answer(headers, body, "x");
        assert!(read(&OK_HEADERS, &ok).is_ok());
        assert_eq!(
            read(&[(b":status", b"503")], b"").unwrap_err(),
            Failure::Retryable("keyward unavailable")
        );
        assert_eq!(
            read(&[(b":status", b"200"), (b"grpc-status", b"14")], b"").unwrap_err(),
            Failure::Retryable("keyward unavailable")
        );
        assert!(matches!(
            read(&[(b":status", b"200"), (b"grpc-status", b"13")], b""),
            Err(Failure::Final(_))
        ));
        assert!(matches!(
            read(&[(b":status", b"404")], &ok),
            Err(Failure::Final(_))
        ));
        assert!(matches!(read(&OK_HEADERS, b""), Err(Failure::Final(_))));
        assert!(matches!(
            read(&OK_HEADERS, &ok[..ok.len() - 1]),
            Err(Failure::Final(_))
        ));
        assert!(matches!(
            read(&OK_HEADERS, &[1, 0, 0, 0, 0]),
            Err(Failure::Final(_))
        ));
        assert!(matches!(
            read(&OK_HEADERS, &[0, 0, 0, 0, 2, 0xff, 0xff]),
            Err(Failure::Final(_))
        ));
    }
}
