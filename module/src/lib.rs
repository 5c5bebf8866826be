//! keyward's Envoy dynamic-module filter (Envoy 1.40, ABI v0.2.0). On the routes that name a
//! keyward context it is the authorizer: it answers requests whose credential keyward already
//! allowed on the route, inside Envoy, and asks keyward's Check itself for every other one
//! (ext_authz is not created on those routes). Other routes are left to ext_authz:
//!
//! - [`abi`]: our declarations of the callbacks we call, resolved at load (refusing to load
//!   when the host lacks one);
//! - [`cache`]: the allows, keyed by a digest of route context and token;
//! - [`check`]: keyward's Check as the module sends it and reads the answer;
//! - [`feed`]: keyward's change feed, which ends every entry on any change and stops all hits
//!   when it is not known good;
//! - [`filter`]: the per-request hooks; [`config`]: the filter configuration and its poll loop.
//!
//! Every hook catches panics: none crosses into Envoy. A panic on a request answers 503.

pub mod abi;
pub mod cache;
pub mod check;
pub mod config;
pub mod feed;
pub mod filter;

#[path = "../../src/credential/sources.rs"]
pub mod sources;

use std::ffi::c_char;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::Instant;

use abi::Api;

static API: OnceLock<Api> = OnceLock::new();
static START: OnceLock<Instant> = OnceLock::new();

/// The callbacks, resolved at load.
pub(crate) fn api() -> Option<&'static Api> {
    API.get()
}

/// Milliseconds on the module's monotonic clock.
pub(crate) fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// How often a per-request problem is logged at most.
const PER_REQUEST_LOG_EVERY_MS: u64 = 10_000;

/// Logs a problem that repeats on every request it affects (a misconfigured route, keyward
/// answering errors) at most once per [`PER_REQUEST_LOG_EVERY_MS`], across workers: the
/// requests fail closed either way, and a log line per request would add load to an overload.
/// The message is built only when logged.
pub(crate) fn log_now_and_then(level: u32, message: impl FnOnce() -> String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    // Stored one past the clock so that 0 means "never".
    let now = now_ms() + 1;
    let last = LAST.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= PER_REQUEST_LOG_EVERY_MS;
    if due
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        log(level, &message());
    }
}

/// Logs through Envoy (its `dynamic_modules` logger).
pub(crate) fn log(level: u32, message: &str) {
    if let Some(api) = api() {
        unsafe { (api.log)(level, abi::ModuleBuffer::of(message.as_bytes())) }
    }
}

/// Runs a hook, turning a panic into `fallback`.
pub(crate) fn guarded<T>(what: &str, fallback: T, hook: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(hook)) {
        Ok(value) => value,
        Err(_) => {
            log(
                abi::LOG_ERROR,
                &format!("keyward module: panic caught in {what}"),
            );
            fallback
        }
    }
}

/// Called once when Envoy loads the module: resolves the callbacks, or refuses to load.
#[unsafe(no_mangle)]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let loaded = catch_unwind(|| match Api::resolve() {
        Ok(api) => {
            let _ = API.set(api);
            START.get_or_init(Instant::now);
            true
        }
        Err(missing) => {
            eprintln!(
                "keyward module: refusing to load: this Envoy does not export `{missing}`; the \
                 module was built for Envoy 1.40 (dynamic modules ABI {}). Build the module \
                 for this Envoy's version, or run the Envoy it was built for.",
                abi::ABI_VERSION.to_str().unwrap_or("?")
            );
            false
        }
    });
    match loaded {
        Ok(true) => abi::ABI_VERSION.as_ptr(),
        _ => std::ptr::null(),
    }
}
