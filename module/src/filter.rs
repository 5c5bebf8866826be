//! The per-request filter and every hook Envoy calls.
//!
//! On request headers, on a route whose metadata names a keyward context (`keyward.context`,
//! `data|<endpoint>|<project>/<deployment>`):
//! - a credential read as keyward reads it, with an allow cached for both while the feed is good
//!   → a hit: the request goes on with keyward's identity headers, without its credential
//!   headers, and with `keyward.module.hit` set;
//! - anything else → a miss: the module asks keyward's Check itself ([`crate::check`]), over
//!   the ext_authz cluster, holding the request (body included) until keyward answers, and does
//!   what the answer says as ext_authz would: an allow changes the request's headers (and is
//!   learnt when keyward says it may be reused), a denial is sent as keyward wrote it, and no
//!   usable answer is a 503 (fail closed). The template does not even create ext_authz on
//!   these routes: a filter skipped by metadata still costs its creation on every request.
//!
//! Other routes are left to ext_authz, untouched.

// The hooks below are Envoy's entry points: their pointer arguments are Envoy's or ours, as the
// ABI defines them, never a caller's choice; they cannot be `unsafe fn` (Envoy calls them).
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_void;
use std::sync::Arc;

use crate::abi::{self, EnvoyBuffer, EnvoyHeader, FilterPtr, ModuleBuffer, ModuleHeader};
use crate::cache::{Entry, Facts, Identity, digest};
use crate::check::{self, Answer, Asked, Decided, Failure, MetadataValue};
use crate::config::{Config, Settings, Shared};
use crate::feed::State;
use crate::{api, guarded, log, log_now_and_then, now_ms};

/// The dynamic metadata namespace the module writes: `hit` on every request it allowed itself
/// (which an ext_authz after it skips), and `checked` when it asked keyward for it first.
pub const NAMESPACE: &str = "keyward.module";
/// Where keyward's answer's dynamic metadata goes: ext_authz's namespace, so access logs read
/// the same whichever of the two asked keyward.
pub const CHECK_NAMESPACE: &str = "envoy.filters.http.ext_authz";
/// The route metadata namespace and key holding the route's keyward context.
pub const ROUTE_NAMESPACE: &str = "keyward";
pub const ROUTE_CONTEXT: &str = "context";
/// The response header of keyward's allow that tells the module what it may reuse. The module
/// takes it out of keyward's answer: it never reaches the request or the response.
pub const LEARN_HEADER: &str = "x-keyward-module";

pub const HEADER_KEY_ID: &str = "x-keyward-key-id";
pub const HEADER_PRINCIPAL: &str = "x-keyward-principal";
pub const HEADER_PROJECT: &str = "x-keyward-project";
pub const HEADER_DEPLOYMENT: &str = "x-keyward-deployment";

/// One request.
pub struct Filter {
    shared: Arc<Shared>,
    /// A miss's Check, from its start until keyward's answer is applied.
    check: Option<Box<Check>>,
    /// Response headers keyward's allow asked for, added when the response starts.
    response_headers: Vec<(String, Vec<u8>)>,
}

/// A miss's Check in flight.
struct Check {
    /// The gRPC-framed `CheckRequest`, kept to send again to another replica.
    body: Vec<u8>,
    /// The route's keyward context.
    context: Box<str>,
    /// The cache key the allow is learnt under (`None`: no credential the module could read).
    learn: Option<[u8; 32]>,
    /// The facts the request was decided on, for an allow that depends on them.
    source_ip: Option<Box<str>>,
    user_agent: Box<str>,
    retries_left: u32,
    deadline_ms: u64,
    /// `http_callout` is running: an answer now is Envoy completing the call inline, and is
    /// left to the caller (it also gets a failed start).
    starting: bool,
}

fn buffer(bytes: &[u8]) -> ModuleBuffer {
    ModuleBuffer::of(bytes)
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

/// The downstream peer's address, `ip:port` (Envoy's `source.address`).
fn source_address<'a>(envoy: FilterPtr) -> Option<&'a str> {
    let api = api()?;
    let mut value = EnvoyBuffer::NULL;
    let found =
        unsafe { (api.get_attribute_string)(envoy, abi::ATTRIBUTE_SOURCE_ADDRESS, &mut value) };
    found
        .then(|| std::str::from_utf8(unsafe { value.bytes() }).ok())
        .flatten()
}

/// `1.2.3.4:5` → `1.2.3.4`, `[::1]:5` → `::1`; an address that is no IP gives `None`.
pub fn ip_of(address: &str) -> Option<&str> {
    check::split_address(address).map(|(ip, _)| ip)
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

/// What the request headers hook decided.
enum Outcome {
    /// Not a route of the module's, or answered from the cache: the request goes on.
    Continue,
    /// Ask keyward.
    Check(Box<Check>),
    /// A route of the module's whose request it cannot ask keyward about: 503.
    FailClosed,
}

impl Filter {
    fn on_request_headers(&mut self, envoy: FilterPtr) -> Outcome {
        let Some(context) =
            metadata_string(envoy, abi::METADATA_ROUTE, ROUTE_NAMESPACE, ROUTE_CONTEXT)
        else {
            return Outcome::Continue;
        };
        if !context.starts_with("data|") {
            return Outcome::Continue;
        }
        let shared = &*self.shared;
        let now = now_ms();
        let outcome = with_request_headers(envoy, |headers| {
            let user_agent = || header_in(headers, "user-agent").ok().flatten();
            let presented = credential(headers, &shared.settings);
            let key = presented.map(|(token, _)| digest(context, token.as_bytes()));
            if let (Some(key), Some((_, present))) = (&key, presented)
                && shared.feed.serving(now)
            {
                // The request's facts are read only for an entry that depends on them.
                let facts = || Facts {
                    source_ip: source_address(envoy).and_then(ip_of),
                    user_agent: user_agent(),
                };
                // `headers` is not read again once the answer has changed the request.
                let generation = shared.feed.generation();
                let answered = shared.cache.serve(key, generation, now, facts, |identity| {
                    answer(envoy, identity, &shared.settings, present)
                });
                if answered {
                    return Outcome::Continue;
                }
            }
            let source = source_address(envoy);
            let pseudo = |name: &str| {
                headers.iter().find_map(|h| {
                    let (k, v) = unsafe { h.parts() };
                    (k == name.as_bytes()).then_some(v)
                })
            };
            let asked = Asked {
                context,
                method: pseudo(":method").unwrap_or_default(),
                path: pseudo(":path").unwrap_or_default(),
                host: pseudo(":authority").unwrap_or_default(),
                source,
                headers: headers
                    .iter()
                    .map(|h| unsafe { h.parts() })
                    .filter(|(name, _)| {
                        name.eq_ignore_ascii_case(b"user-agent")
                            || shared
                                .settings
                                .sources
                                .iter()
                                .any(|s| name.eq_ignore_ascii_case(s.as_bytes()))
                    })
                    .collect(),
            };
            match check::request_body(&asked) {
                None => {
                    log_now_and_then(abi::LOG_ERROR, || {
                        format!(
                            "keyward module: route context {context:?} is not data|<endpoint>|<project>/<deployment>; 503"
                        )
                    });
                    Outcome::FailClosed
                }
                Some(body) => Outcome::Check(Box::new(Check {
                    body,
                    context: context.into(),
                    learn: key,
                    source_ip: source.and_then(ip_of).map(Into::into),
                    user_agent: user_agent().unwrap_or_default().into(),
                    retries_left: shared.settings.check_retries,
                    deadline_ms: now + shared.settings.check_timeout_ms,
                    starting: false,
                })),
            }
        });
        // On a route of the module's nothing else authorizes the request (ext_authz is not
        // created there): what the module cannot ask keyward about is refused.
        outcome.unwrap_or(Outcome::FailClosed)
    }

    /// After keyward answered a miss's Check: what the answer asks. Returns what to do last,
    /// once nothing of the filter is touched any more (both may end the stream, and with it
    /// the filter).
    fn on_check_answer(&mut self, check: Check, decided: Decided, envoy: FilterPtr) -> Last {
        for (name, value) in &decided.metadata {
            set_metadata(envoy, CHECK_NAMESPACE, name, value);
        }
        match decided.answer {
            Answer::Deny {
                status,
                headers,
                body,
            } => Last::Respond {
                status,
                headers,
                body,
                details: "keyward_denied",
            },
            Answer::Allow(allow) => {
                let Some(api) = api() else {
                    return Last::fail_closed();
                };
                for (name, value, overwrite) in &allow.set {
                    let (name, value) = (buffer(name.as_bytes()), buffer(value));
                    unsafe {
                        match overwrite {
                            true => (api.set_header)(envoy, abi::REQUEST_HEADERS, name, value),
                            false => (api.add_header)(envoy, abi::REQUEST_HEADERS, name, value),
                        };
                    }
                }
                for name in &allow.remove {
                    unsafe {
                        (api.set_header)(
                            envoy,
                            abi::REQUEST_HEADERS,
                            buffer(name.as_bytes()),
                            ModuleBuffer::NULL,
                        );
                    }
                }
                self.response_headers = allow.response_headers;
                if let (Some(key), Some(text)) = (check.learn, allow.learnable) {
                    self.learn(key, &check, &text);
                }
                // Answered by the module, like a hit: an ext_authz still in the chain on this
                // route (a template other than ours) skips it rather than asking again without
                // the credential just removed. `checked` tells the log keyward was asked.
                let (ns, hit) = (buffer(NAMESPACE.as_bytes()), buffer(b"hit"));
                unsafe {
                    (api.set_metadata_bool)(envoy, ns, hit, true);
                    (api.set_metadata_bool)(envoy, ns, buffer(b"checked"), true);
                }
                Last::Continue
            }
        }
    }

    /// Keeps keyward's allow, when it is for this request's route context and keyward says the
    /// module may reuse it, for the facts it was decided on.
    fn learn(&self, key: [u8; 32], check: &Check, text: &str) {
        let Some((decided, ttl_ms, vary_ip, vary_ua, identity)) =
            parse_learnable(text, &check.context)
        else {
            return;
        };
        let Some(generation) = self.shared.feed.learnable(&decided) else {
            return;
        };
        let source_ip = match (vary_ip, &check.source_ip) {
            (false, _) => None,
            (true, Some(ip)) => Some(ip.clone()),
            (true, None) => return,
        };
        // A request without a user agent is decided as such: keep that (empty) fact.
        let user_agent = vary_ua.then(|| check.user_agent.clone());
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

    fn on_response_headers(&mut self, envoy: FilterPtr) {
        if self.response_headers.is_empty() {
            return;
        }
        let Some(api) = api() else { return };
        for (name, value) in std::mem::take(&mut self.response_headers) {
            unsafe {
                (api.add_header)(
                    envoy,
                    abi::RESPONSE_HEADERS,
                    buffer(name.as_bytes()),
                    buffer(&value),
                );
            }
        }
    }
}

/// What a hook does last, after it is done with the filter.
enum Last {
    Continue,
    Respond {
        status: u32,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        details: &'static str,
    },
}

impl Last {
    /// keyward could not be asked, or its answer could not be used: fail closed.
    fn fail_closed() -> Last {
        Last::Respond {
            status: 503,
            headers: vec![("content-type".into(), b"application/json".to_vec())],
            body: UNAVAILABLE_BODY.to_vec(),
            details: "keyward_module_check_failed",
        }
    }

    fn run(self, envoy: FilterPtr) {
        let Some(api) = api() else { return };
        match self {
            Last::Continue => unsafe { (api.continue_decoding)(envoy) },
            Last::Respond {
                status,
                headers,
                body,
                details,
            } => {
                let mut headers: Vec<ModuleHeader> = headers
                    .iter()
                    .map(|(name, value)| ModuleHeader::of(name, value))
                    .collect();
                unsafe {
                    (api.send_response)(
                        envoy,
                        status,
                        headers.as_mut_ptr(),
                        headers.len(),
                        buffer(&body),
                        buffer(details.as_bytes()),
                    )
                }
            }
        }
    }
}

fn set_metadata(envoy: FilterPtr, ns: &str, key: &str, value: &MetadataValue) {
    let Some(api) = api() else { return };
    let (ns, key) = (buffer(ns.as_bytes()), buffer(key.as_bytes()));
    unsafe {
        match value {
            MetadataValue::Text(text) => {
                (api.set_metadata_string)(envoy, ns, key, buffer(text.as_bytes()))
            }
            MetadataValue::Number(number) => (api.set_metadata_number)(envoy, ns, key, *number),
            MetadataValue::Flag(flag) => (api.set_metadata_bool)(envoy, ns, key, *flag),
        }
    }
}

/// Sends the Check of the filter at `filter` to keyward. No reference into the filter is held
/// while Envoy runs the call: Envoy may complete it inline, calling the callout hook, which
/// reads the filter itself. `false`: it could not be sent.
fn send_check(envoy: FilterPtr, filter: *mut Filter) -> bool {
    let Some(api) = api() else { return false };
    let (body, shared, timeout_ms) = {
        let this = unsafe { &mut *filter };
        let Some(check) = this.check.as_mut() else {
            return false;
        };
        let remaining = check.deadline_ms.saturating_sub(now_ms());
        if remaining == 0 {
            return false;
        }
        check.starting = true;
        (
            std::mem::take(&mut check.body),
            this.shared.clone(),
            remaining,
        )
    };
    let settings = &shared.settings;
    let grpc_timeout = format!("{timeout_ms}m");
    let mut headers = [
        ModuleHeader::of(":method", b"POST"),
        ModuleHeader::of(":path", check::CHECK_PATH.as_bytes()),
        ModuleHeader::of("host", settings.authority.as_bytes()),
        ModuleHeader::of("content-type", b"application/grpc"),
        ModuleHeader::of("te", b"trailers"),
        ModuleHeader::of("grpc-timeout", grpc_timeout.as_bytes()),
    ];
    let mut id = 0u64;
    let started = unsafe {
        (api.http_callout)(
            envoy,
            &mut id,
            buffer(settings.cluster.as_bytes()),
            headers.as_mut_ptr(),
            headers.len(),
            buffer(&body),
            timeout_ms,
        )
    };
    let this = unsafe { &mut *filter };
    if let Some(check) = this.check.as_mut() {
        check.starting = false;
        check.body = body;
    }
    started == abi::CALLOUT_INIT_SUCCESS
}

/// Sends the Check again while retries and time are left; otherwise fails closed.
fn retry_or_fail(envoy: FilterPtr, filter: *mut Filter) {
    let again = {
        let this = unsafe { &mut *filter };
        match this.check.as_mut() {
            Some(check) if check.retries_left > 0 && now_ms() < check.deadline_ms => {
                check.retries_left -= 1;
                true
            }
            _ => false,
        }
    };
    if again && send_check(envoy, filter) {
        return;
    }
    unsafe { (*filter).check = None };
    Last::fail_closed().run(envoy);
}

/// The answer to the Check of the filter at `filter` arrived (or the call failed).
fn check_answered(
    envoy: FilterPtr,
    filter: *mut Filter,
    result: u32,
    headers: &[EnvoyHeader],
    body: &[EnvoyBuffer],
) {
    let read = {
        let this = unsafe { &mut *filter };
        match this.check.as_deref() {
            // Completed inline, inside `send_check`: it sees the failed start.
            None | Some(Check { starting: true, .. }) => return,
            Some(_) => {}
        }
        match result == abi::CALLOUT_SUCCESS {
            false => Err(Failure::Retryable("no answer")),
            true => {
                let headers: Vec<(&[u8], &[u8])> =
                    headers.iter().map(|h| unsafe { h.parts() }).collect();
                let mut bytes = Vec::new();
                for chunk in body {
                    bytes.extend_from_slice(unsafe { chunk.bytes() });
                }
                check::read_answer(&headers, &bytes, LEARN_HEADER)
            }
        }
    };
    match read {
        Err(Failure::Retryable(_)) => retry_or_fail(envoy, filter),
        Err(Failure::Final(why)) => {
            log_now_and_then(abi::LOG_WARN, || format!("keyward module: {why}; 503"));
            unsafe { (*filter).check = None };
            Last::fail_closed().run(envoy);
        }
        Ok(decided) => {
            let last = {
                let this = unsafe { &mut *filter };
                let check = this.check.take().expect("checked above");
                this.on_check_answer(*check, decided, envoy)
            };
            last.run(envoy);
        }
    }
}

/// A hit: what keyward's allow does to the request (identity headers overwritten, the
/// credential headers it carries removed: `present` as [`credential`] gives it), and the marker
/// for the access log (and for an ext_authz after the module, which it tells to skip).
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

/// keyward's allow, when it is for this route's context and keyward says the module may reuse
/// it: `v1` and nine fields separated by spaces (keyward's `src/module.rs`, `learnable`), or
/// `-`. Anything else is not learnt.
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

const UNAVAILABLE_BODY: &[u8] = br#"{"error":{"message":"The service is temporarily unable to handle this request; retry shortly.","type":"server_error","param":null,"code":"service_unavailable"}}"#;

/// A 503 for a request the module failed on (a caught panic): fail closed.
fn fail_closed(envoy: FilterPtr) {
    Last::fail_closed().run(envoy);
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
        let (headers, body) = unsafe {
            (
                abi::slice_of(headers, headers_size),
                abi::slice_of(body, body_size),
            )
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
            check: None,
            response_headers: Vec::new(),
        })) as *const c_void
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterPtr,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    let filter = filter as *mut Filter;
    let status = guarded("request_headers", None, || {
        if filter.is_null() {
            return None;
        }
        let outcome = unsafe { &mut *filter }.on_request_headers(envoy);
        Some(match outcome {
            Outcome::Continue => abi::HEADERS_CONTINUE,
            Outcome::FailClosed => {
                fail_closed(envoy);
                abi::HEADERS_STOP
            }
            Outcome::Check(check) => {
                unsafe { (*filter).check = Some(check) };
                if !send_check(envoy, filter) {
                    retry_or_fail(envoy, filter);
                }
                // Whatever happened, the request waits: for keyward's answer, or a local
                // reply already sent.
                abi::HEADERS_STOP_ALL_WATERMARK
            }
        })
    });
    match status {
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
    envoy: FilterPtr,
    filter: *const c_void,
    _callout: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body: *const EnvoyBuffer,
    body_size: usize,
) {
    let filter = filter as *mut Filter;
    let done = guarded("http_callout_done", false, || {
        if filter.is_null() {
            return true;
        }
        let (headers, body) = unsafe {
            (
                abi::slice_of(headers, headers_size),
                abi::slice_of(body, body_size),
            )
        };
        check_answered(envoy, filter, result, headers, body);
        true
    });
    if !done {
        guarded("fail_closed", (), || fail_closed(envoy));
    }
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
