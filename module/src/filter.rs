//! The per-request filter and every hook Envoy calls.
//!
//! On request headers: a route whose metadata names a keyward context (`keyward.context`,
//! `data|<endpoint>|<project>/<deployment>`), a credential read as keyward reads it, and an
//! allow cached for both while the feed is good → the request goes on with keyward's identity
//! headers, without its credential headers, and with `keyward.module.hit` set, which the
//! ext_authz filter's `filter_enabled_metadata` reads to skip the Check. Anything else goes on
//! untouched to ext_authz, and keyward's answer (the `x-keyward-module` response header,
//! removed here) is learnt when the response starts.

// The hooks below are Envoy's entry points: their pointer arguments are Envoy's or ours, as the
// ABI defines them, never a caller's choice; they cannot be `unsafe fn` (Envoy calls them).
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_void;
use std::sync::Arc;

use crate::abi::{self, EnvoyBuffer, EnvoyHeader, FilterPtr, ModuleBuffer, ModuleHeader};
use crate::cache::{Entry, Facts, Identity, digest};
use crate::config::{Config, Settings, Shared};
use crate::feed::State;
use crate::{api, guarded, log, now_ms};

/// The dynamic metadata namespace the module writes (`hit`).
pub const NAMESPACE: &str = "keyward.module";
/// The route metadata namespace and key holding the route's keyward context.
pub const ROUTE_NAMESPACE: &str = "keyward";
pub const ROUTE_CONTEXT: &str = "context";
/// The response header keyward's allow tells the module what it may reuse in.
pub const LEARN_HEADER: &str = "x-keyward-module";

pub const HEADER_KEY_ID: &str = "x-keyward-key-id";
pub const HEADER_PRINCIPAL: &str = "x-keyward-principal";
pub const HEADER_PROJECT: &str = "x-keyward-project";
pub const HEADER_DEPLOYMENT: &str = "x-keyward-deployment";

/// One request.
pub struct Filter {
    shared: Arc<Shared>,
    /// On a miss: the entry's key and the route context, to learn keyward's answer.
    learn: Option<([u8; 32], Box<str>)>,
}

fn buffer(bytes: &[u8]) -> ModuleBuffer {
    ModuleBuffer::of(bytes)
}

/// Header `name` of the request or response (`kind`): `Ok(None)` absent, `Err(())` sent more
/// than once or not UTF-8.
fn header<'a>(envoy: FilterPtr, kind: u32, name: &str) -> Result<Option<&'a str>, ()> {
    let api = api().ok_or(())?;
    let mut value = EnvoyBuffer::NULL;
    let mut count = 0usize;
    let found = unsafe {
        (api.get_header)(
            envoy,
            kind,
            buffer(name.as_bytes()),
            &mut value,
            0,
            &mut count,
        )
    };
    match (found && !value.ptr.is_null(), count) {
        (_, 0) => Ok(None),
        (true, 1) => std::str::from_utf8(unsafe { value.bytes() })
            .map(Some)
            .map_err(|_| ()),
        _ => Err(()),
    }
}

fn metadata_string<'a>(envoy: FilterPtr, source: u32, ns: &str, key: &str) -> Option<&'a str> {
    let api = api()?;
    let mut value = EnvoyBuffer::NULL;
    let found = unsafe {
        (api.get_metadata_string)(
            envoy,
            source,
            buffer(ns.as_bytes()),
            buffer(key.as_bytes()),
            &mut value,
        )
    };
    found
        .then(|| std::str::from_utf8(unsafe { value.bytes() }).ok())
        .flatten()
}

/// The downstream peer's IP (Envoy's `source.address` without the port).
fn source_ip<'a>(envoy: FilterPtr) -> Option<&'a str> {
    let api = api()?;
    let mut value = EnvoyBuffer::NULL;
    let found =
        unsafe { (api.get_attribute_string)(envoy, abi::ATTRIBUTE_SOURCE_ADDRESS, &mut value) };
    if !found {
        return None;
    }
    let address = std::str::from_utf8(unsafe { value.bytes() }).ok()?;
    ip_of(address)
}

/// `1.2.3.4:5` → `1.2.3.4`, `[::1]:5` → `::1`; an address that is no IP gives `None`.
pub fn ip_of(address: &str) -> Option<&str> {
    let ip = match address.strip_prefix('[') {
        Some(rest) => rest.split_once(']')?.0,
        None => match address.rsplit_once(':') {
            Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
            _ => address,
        },
    };
    ip.parse::<std::net::IpAddr>().is_ok().then_some(ip)
}

/// More headers than this are read into the heap instead of the stack.
const INLINE_HEADERS: usize = 64;

/// Runs `read` over the request's headers, fetched from Envoy in one call: a lookup by name
/// would copy and lower-case the name inside Envoy once per header asked for. The slices `read`
/// sees point into Envoy's header map: valid until the module changes a request header.
fn with_request_headers<T>(envoy: FilterPtr, read: impl FnOnce(&[EnvoyHeader]) -> T) -> Option<T> {
    let api = api()?;
    let count = unsafe { (api.get_headers_size)(envoy, abi::REQUEST_HEADERS) };
    let mut inline = [EnvoyHeader::EMPTY; INLINE_HEADERS];
    let mut spilled = Vec::new();
    let slots = match count <= INLINE_HEADERS {
        true => &mut inline[..count],
        false => {
            spilled.resize(count, EnvoyHeader::EMPTY);
            &mut spilled[..]
        }
    };
    if count > 0 && !unsafe { (api.get_headers)(envoy, abi::REQUEST_HEADERS, slots.as_mut_ptr()) } {
        return None;
    }
    Some(read(slots))
}

/// Header `name` among `headers`: `Ok(None)` absent, `Err(())` sent more than once or not
/// UTF-8 (a malformed credential for keyward: never a hit).
fn header_in<'a>(headers: &[EnvoyHeader], name: &str) -> Result<Option<&'a str>, ()> {
    let mut found = None;
    for entry in headers {
        let (key, value) = unsafe { entry.parts() };
        if key.eq_ignore_ascii_case(name.as_bytes()) {
            if found.is_some() {
                return Err(());
            }
            found = Some(value);
        }
    }
    found
        .map(|value| std::str::from_utf8(value).map_err(|_| ()))
        .transpose()
}

/// The credential as keyward reads it ([`crate::sources`]), and which credential headers the
/// request carries (bit `i` for `sources[i]`; every source past the 64th counts as present),
/// which a hit removes. `None` when there is no credential or one cannot be read (both left
/// to keyward).
fn credential<'a>(headers: &[EnvoyHeader], settings: &Settings) -> Option<(&'a str, u64)> {
    let mut token = None;
    let mut present = 0u64;
    for (i, source) in settings.sources.iter().enumerate() {
        match header_in(headers, source) {
            Err(()) => return None,
            Ok(None) => continue,
            Ok(Some(value)) => {
                present |= source_bit(i);
                if token.is_none() {
                    token = crate::sources::token_in(source, value);
                }
            }
        }
    }
    token.map(|token| (token, present))
}

fn source_bit(i: usize) -> u64 {
    if i < 64 { 1 << i } else { u64::MAX }
}

impl Filter {
    fn on_request_headers(&mut self, envoy: FilterPtr) -> u32 {
        let Some(context) =
            metadata_string(envoy, abi::METADATA_ROUTE, ROUTE_NAMESPACE, ROUTE_CONTEXT)
        else {
            return abi::HEADERS_CONTINUE;
        };
        if !context.starts_with("data|") {
            return abi::HEADERS_CONTINUE;
        }
        let shared = &*self.shared;
        let now = now_ms();
        let missed = with_request_headers(envoy, |headers| {
            let (token, present) = credential(headers, &shared.settings)?;
            let key = digest(context, token.as_bytes());
            if shared.feed.serving(now) {
                let facts = || Facts {
                    source_ip: source_ip(envoy),
                    user_agent: header_in(headers, "user-agent").ok().flatten(),
                };
                // `headers` is not read again once the answer has changed the request.
                let generation = shared.feed.generation();
                let answered = shared
                    .cache
                    .serve(&key, generation, now, facts, |identity| {
                        answer(envoy, identity, &shared.settings, present)
                    });
                if answered {
                    return None;
                }
            }
            Some(key)
        });
        if let Some(Some(key)) = missed {
            self.learn = Some((key, context.into()));
        }
        abi::HEADERS_CONTINUE
    }

    /// After ext_authz: learn keyward's allow, when it says the module may keep it.
    fn on_response_headers(&mut self, envoy: FilterPtr) {
        let Some((key, context)) = self.learn.take() else {
            return;
        };
        let Some(learnt) = learnt(envoy, &context) else {
            return;
        };
        let (decided, ttl_ms, vary_ip, vary_ua, identity) = learnt;
        let Some(generation) = self.shared.feed.learnable(&decided) else {
            return;
        };
        let source_ip = match vary_ip {
            false => None,
            true => match source_ip(envoy) {
                Some(ip) => Some(ip.into()),
                None => return,
            },
        };
        let user_agent = match vary_ua {
            false => None,
            // A request without a user agent is decided as such: keep that (empty) fact.
            true => Some(
                header(envoy, abi::REQUEST_HEADERS, "user-agent")
                    .ok()
                    .flatten()
                    .unwrap_or_default()
                    .into(),
            ),
        };
        let now = now_ms();
        let entry = Entry {
            identity,
            generation,
            until_ms: now + ttl_ms.min(self.shared.settings.max_ttl_ms),
            source_ip,
            user_agent,
        };
        self.shared.cache.insert(key, entry, generation, now);
    }
}

/// A hit: what keyward's allow does to the request (identity headers overwritten, the
/// credential headers it carries removed: `present` as [`credential`] gives it), and the marker
/// that skips ext_authz.
fn answer(envoy: FilterPtr, identity: &Identity, settings: &Settings, present: u64) {
    let Some(api) = api() else { return };
    let set = |name: &str, value: ModuleBuffer| unsafe {
        (api.set_header)(envoy, abi::REQUEST_HEADERS, buffer(name.as_bytes()), value);
    };
    set(HEADER_KEY_ID, buffer(identity.key_id.as_bytes()));
    set(HEADER_PRINCIPAL, buffer(identity.principal.as_bytes()));
    set(HEADER_PROJECT, buffer(identity.project.as_bytes()));
    set(HEADER_DEPLOYMENT, buffer(identity.deployment.as_bytes()));
    for (i, source) in settings.sources.iter().enumerate() {
        if present & source_bit(i) != 0 {
            set(source, ModuleBuffer::NULL);
        }
    }
    // Only the marker: the access log reads who from the identity headers just set.
    unsafe {
        (api.set_metadata_bool)(envoy, buffer(NAMESPACE.as_bytes()), buffer(b"hit"), true);
    }
}

type Learnt = (State, u64, bool, bool, Identity);

/// keyward's allow, when it is for this route's context and keyward says the module may
/// reuse it: the `x-keyward-module` response header ext_authz added from keyward's answer, `v1`
/// and nine fields separated by spaces (keyward's `src/module.rs`, `learnable`), or `-`.
/// keyward sets it on every allow, over anything the upstream answered, so the value read here
/// is keyward's; and it is removed here, so the client never sees it. Anything else is not
/// learnt.
fn learnt(envoy: FilterPtr, context: &str) -> Option<Learnt> {
    let text = header(envoy, abi::RESPONSE_HEADERS, LEARN_HEADER).ok()??;
    // Parsed into owned values before the removal frees the header's bytes.
    let learnt = parse_learnable(text, context);
    if let Some(api) = api() {
        unsafe {
            (api.set_header)(
                envoy,
                abi::RESPONSE_HEADERS,
                buffer(LEARN_HEADER.as_bytes()),
                ModuleBuffer::NULL,
            );
        }
    }
    learnt
}

/// The header's text, when it is well formed and for `context`.
pub fn parse_learnable(text: &str, context: &str) -> Option<Learnt> {
    let mut lines = text.split(' ');
    let mut next = || lines.next();
    let (version, instance, epoch, ttl_ms, vary, decided_context) =
        (next()?, next()?, next()?, next()?, next()?, next()?);
    let identity = Identity {
        key_id: next()?.into(),
        principal: next()?.into(),
        project: next()?.into(),
        deployment: next()?.into(),
    };
    if version != "v1" || next().is_some() || decided_context != context {
        return None;
    }
    let epoch: u64 = epoch.parse().ok()?;
    let ttl_ms: u64 = ttl_ms.parse().ok().filter(|&ttl| ttl >= 1)?;
    Some((
        State {
            instance: instance.to_owned(),
            epoch,
        },
        ttl_ms,
        vary.split(',').any(|v| v == "ip"),
        vary.split(',').any(|v| v == "ua"),
        identity,
    ))
}

/// A 503 for a request the module failed on (a caught panic): fail closed.
fn fail_closed(envoy: FilterPtr) {
    let Some(api) = api() else { return };
    let body = br#"{"error":{"message":"The service is temporarily unable to handle this request; retry shortly.","type":"server_error","param":null,"code":"service_unavailable"}}"#;
    let mut headers = [ModuleHeader::of("content-type", b"application/json")];
    unsafe {
        (api.send_response)(
            envoy,
            503,
            headers.as_mut_ptr(),
            headers.len(),
            buffer(body),
            buffer(b"keyward_module_error"),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Event hooks (Envoy → module). Each one catches panics.
// ---------------------------------------------------------------------------------------------

unsafe fn config_of<'a>(ptr: *const c_void) -> Option<&'a mut Config> {
    unsafe { (ptr as *mut Config).as_mut() }
}

unsafe fn filter_of<'a>(ptr: *const c_void) -> Option<&'a mut Filter> {
    unsafe { (ptr as *mut Filter).as_mut() }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    envoy: abi::ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded("config_new", std::ptr::null(), || {
        match Settings::parse(unsafe { config.bytes() }) {
            Ok(settings) => Box::into_raw(Config::new(envoy, settings)) as *const c_void,
            Err(error) => {
                log(abi::LOG_ERROR, &format!("keyward module: {error}"));
                eprintln!("keyward module: {error}");
                std::ptr::null()
            }
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded("config_destroy", (), || {
        if !config.is_null() {
            drop(unsafe { Box::from_raw(config as *mut Config) });
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    envoy: abi::ConfigEnvoyPtr,
    config: *const c_void,
    _event: u64,
) {
    guarded("config_scheduled", (), || {
        if let Some(config) = unsafe { config_of(config) } {
            config.on_scheduled(envoy);
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _envoy: abi::ConfigEnvoyPtr,
    config: *const c_void,
    _callout: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    guarded("config_http_callout_done", (), || {
        let Some(config) = (unsafe { config_of(config) }) else {
            return;
        };
        let headers = match headers.is_null() {
            true => &[][..],
            false => unsafe { std::slice::from_raw_parts(headers, headers_size) },
        };
        let body = match body.is_null() {
            true => &[][..],
            false => unsafe { std::slice::from_raw_parts(body, body_size) },
        };
        config.on_answer(result, headers, body);
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _envoy: FilterPtr,
) -> *const c_void {
    guarded("filter_new", std::ptr::null(), || {
        let Some(config) = (unsafe { config_of(config) }) else {
            return std::ptr::null();
        };
        Box::into_raw(Box::new(Filter {
            shared: config.shared.clone(),
            learn: None,
        })) as *const c_void
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterPtr,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    let answered = guarded("request_headers", None, || {
        unsafe { filter_of(filter) }.map(|f| f.on_request_headers(envoy))
    });
    match answered {
        Some(status) => status,
        None => {
            guarded("fail_closed", (), || fail_closed(envoy));
            abi::HEADERS_STOP
        }
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterPtr,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded("response_headers", (), || {
        if let Some(filter) = unsafe { filter_of(filter) } {
            filter.on_response_headers(envoy);
        }
    });
    abi::HEADERS_CONTINUE
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    guarded("filter_destroy", (), || {
        if !filter.is_null() {
            drop(unsafe { Box::from_raw(filter as *mut Filter) });
        }
    })
}

// The hooks Envoy requires but this filter does not act on.

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: FilterPtr,
    _: *const c_void,
    _: bool,
) -> u32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: FilterPtr,
    _: *const c_void,
) -> u32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: FilterPtr,
    _: *const c_void,
    _: bool,
) -> u32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: FilterPtr,
    _: *const c_void,
) -> u32 {
    0
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _: FilterPtr,
    _: *const c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: u32,
    _: *const EnvoyHeader,
    _: usize,
    _: *const EnvoyBuffer,
    _: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: *const EnvoyHeader,
    _: usize,
    _: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: *const EnvoyBuffer,
    _: usize,
    _: bool,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: *const EnvoyHeader,
    _: usize,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _: FilterPtr,
    _: *const c_void,
    _: u64,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterPtr,
    _: *const c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterPtr,
    _: *const c_void,
) {
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _: EnvoyBuffer,
    _: EnvoyBuffer,
) -> *const c_void {
    // No per-route configuration: the route's context is route metadata.
    std::ptr::null()
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: *const c_void) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// keyward writes exactly this (`src/module.rs`, `learnable`): keep them in step.
    #[test]
    fn an_allow_is_learnt_from_its_ten_fields_for_its_own_context_only() {
        let text = "v1 i-1 42 9000 ip data|public|acme/chat AAAAAAAAAAAA app acme acme/chat";
        let (state, ttl_ms, vary_ip, vary_ua, identity) =
            parse_learnable(text, "data|public|acme/chat").unwrap();
        assert_eq!((state.instance.as_str(), state.epoch), ("i-1", 42));
        assert_eq!((ttl_ms, vary_ip, vary_ua), (9_000, true, false));
        assert_eq!(
            identity,
            Identity {
                key_id: "AAAAAAAAAAAA".into(),
                principal: "app".into(),
                project: "acme".into(),
                deployment: "acme/chat".into(),
            }
        );
        assert!(parse_learnable(text, "data|private|acme/chat").is_none());
        assert!(parse_learnable(&format!("{text} extra"), "data|public|acme/chat").is_none());
        assert!(parse_learnable(&text.replace("v1", "v2"), "data|public|acme/chat").is_none());
        assert!(parse_learnable(&text.replace(" 9000 ", " 0 "), "data|public|acme/chat").is_none());
        assert!(parse_learnable(&text.replace(" 42 ", " -1 "), "data|public|acme/chat").is_none());
        assert!(parse_learnable("v1 i-1", "data|public|acme/chat").is_none());
        assert!(parse_learnable("-", "data|public|acme/chat").is_none());
        let (_, _, vary_ip, vary_ua, _) =
            parse_learnable(&text.replace(" ip ", " - "), "data|public|acme/chat").unwrap();
        assert!(!vary_ip && !vary_ua);
    }

    #[test]
    fn source_addresses_give_their_ip() {
        assert_eq!(ip_of("10.1.2.3:5555"), Some("10.1.2.3"));
        assert_eq!(ip_of("10.1.2.3"), Some("10.1.2.3"));
        assert_eq!(ip_of("[::1]:80"), Some("::1"));
        assert_eq!(ip_of("::1"), Some("::1"));
        assert_eq!(ip_of("/tmp/sock"), None);
        assert_eq!(ip_of("host:80"), None);
    }
}
