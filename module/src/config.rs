//! The filter configuration: parsed from the `filter_config` string (JSON), shared by every
//! request's filter, and the owner of the feed's poll loop.
//!
//! Polls start on Envoy's main thread (the config's HTTP callouts only run there). A small
//! thread of ours keeps the schedule: it wakes when the next poll is due and hands the main
//! thread an event through the config scheduler; it is joined before the scheduler is deleted.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::abi::{self, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHeader, ModuleBuffer, ModuleHeader};
use crate::cache::DecisionCache;
use crate::feed::{self, Feed};

/// The module's settings, all optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The cluster keyward's Check runs on (the ext_authz cluster): polls go there.
    pub cluster: String,
    /// The `:authority` of the polls.
    pub authority: String,
    /// The credential headers, in keyward's order (`credentials.sources`).
    pub sources: Vec<String>,
    /// Most allows kept (memory: at most ~1 KiB each).
    pub max_entries: usize,
    /// Longest an allow is reused, whatever keyward allows (keyward's answer may bound it lower).
    pub max_ttl_ms: u64,
    /// How long keyward holds a poll when nothing changes.
    pub feed_wait_ms: u64,
    /// How long after the last poll answer hits are still served: a feed silent for longer
    /// is not known good. Above `feed_wait_ms` plus a round trip.
    pub feed_stale_ms: u64,
    /// Wait before polling again after a failed poll.
    pub feed_retry_ms: u64,
    /// How long a miss waits for keyward's Check, retries included, before failing closed
    /// with a 503 (ext_authz's `timeout` in the template).
    pub check_timeout_ms: u64,
    /// How many times a miss's Check is sent again when it did not reach a keyward that
    /// answered, or keyward answered that it is unavailable (the cluster's load balancer
    /// picks the replica; ext_authz's `retry_policy` in the template).
    pub check_retries: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: "keyward_ext_authz".into(),
            authority: "keyward".into(),
            sources: vec![
                "authorization".into(),
                "x-api-key".into(),
                "x-auth-token".into(),
            ],
            max_entries: 100_000,
            max_ttl_ms: 60_000,
            feed_wait_ms: 1_000,
            feed_stale_ms: 1_500,
            feed_retry_ms: 100,
            check_timeout_ms: 500,
            check_retries: 2,
        }
    }
}

impl Settings {
    pub fn parse(text: &[u8]) -> Result<Settings, String> {
        let text = std::str::from_utf8(text).map_err(|_| "filter_config is not UTF-8")?;
        let settings: Settings = if text.trim().is_empty() {
            Settings::default()
        } else {
            serde_json::from_str(text).map_err(|e| format!("filter_config: {e}"))?
        };
        if settings.feed_stale_ms <= settings.feed_wait_ms {
            return Err("filter_config: feed_stale_ms must be above feed_wait_ms".into());
        }
        if settings.check_timeout_ms == 0 {
            return Err("filter_config: check_timeout_ms must be above 0".into());
        }
        if settings.sources.is_empty() || settings.cluster.is_empty() {
            return Err("filter_config: sources and cluster must not be empty".into());
        }
        Ok(settings)
    }
}

/// What every request's filter shares.
pub struct Shared {
    pub settings: Settings,
    pub cache: DecisionCache,
    pub feed: Feed,
}

/// When the schedule thread should hand the main thread a poll.
#[derive(Default)]
struct Schedule {
    due: Option<Instant>,
    stop: bool,
}

/// The config scheduler, handed to our thread.
struct Scheduler(abi::SchedulerPtr);
// SAFETY: Envoy's config scheduler may be committed to from any thread.
unsafe impl Send for Scheduler {}

/// The in-module filter configuration.
pub struct Config {
    pub shared: Arc<Shared>,
    schedule: Arc<(Mutex<Schedule>, Condvar)>,
    scheduler: abi::SchedulerPtr,
    thread: Option<JoinHandle<()>>,
    /// A poll is in flight.
    polling: bool,
}

pub const EVENT_POLL: u64 = 1;

impl Config {
    pub(crate) fn new(envoy: ConfigEnvoyPtr, settings: Settings) -> Box<Config> {
        let api = crate::api().expect("resolved at load");
        let shared = Arc::new(Shared {
            cache: DecisionCache::new(settings.max_entries),
            feed: Feed::default(),
            settings,
        });
        let scheduler = unsafe { (api.config_scheduler_new)(envoy) };
        let schedule: Arc<(Mutex<Schedule>, Condvar)> = Arc::default();
        let thread = {
            let schedule = schedule.clone();
            let handed = Scheduler(scheduler);
            std::thread::Builder::new()
                .name("keyward-feed".into())
                .spawn(move || run_schedule(&schedule, handed))
                .ok()
        };
        let config = Box::new(Config {
            shared,
            schedule,
            scheduler,
            thread,
            polling: false,
        });
        config.poll_in(Duration::ZERO);
        config
    }

    fn poll_in(&self, delay: Duration) {
        let (lock, wake) = &*self.schedule;
        let mut schedule = lock.lock().unwrap_or_else(|e| e.into_inner());
        schedule.due = Some(Instant::now() + delay);
        wake.notify_one();
    }

    /// Main thread: a poll is due.
    pub(crate) fn on_scheduled(&mut self, envoy: ConfigEnvoyPtr) {
        if self.polling {
            return;
        }
        let Some(api) = crate::api() else { return };
        let settings = &self.shared.settings;
        let body = feed::poll_body(&self.shared.feed.last(), settings.feed_wait_ms);
        let mut headers = [
            ModuleHeader::of(":method", b"POST"),
            ModuleHeader::of(":path", feed::POLL_PATH.as_bytes()),
            ModuleHeader::of("host", settings.authority.as_bytes()),
            ModuleHeader::of("content-type", b"application/grpc"),
            ModuleHeader::of("te", b"trailers"),
        ];
        let mut id = 0u64;
        let started = unsafe {
            (api.config_http_callout)(
                envoy,
                &mut id,
                ModuleBuffer::of(settings.cluster.as_bytes()),
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(&body),
                settings.feed_wait_ms + 1_000,
            )
        };
        if started == abi::CALLOUT_INIT_SUCCESS {
            self.polling = true;
        } else {
            self.shared.feed.lost();
            self.poll_in(Duration::from_millis(settings.feed_retry_ms));
        }
    }

    /// Main thread: a poll answered (or failed).
    pub(crate) fn on_answer(&mut self, result: u32, headers: &[EnvoyHeader], body: &[EnvoyBuffer]) {
        self.polling = false;
        let state = (result == abi::CALLOUT_SUCCESS)
            .then(|| answered(headers, body))
            .flatten();
        let settings = &self.shared.settings;
        match state {
            Some(state) => {
                if self
                    .shared
                    .feed
                    .heard(state, crate::now_ms(), settings.feed_stale_ms)
                {
                    self.shared.cache.clear();
                }
                self.poll_in(Duration::ZERO);
            }
            None => {
                self.shared.feed.lost();
                self.poll_in(Duration::from_millis(settings.feed_retry_ms));
            }
        }
    }
}

/// The state in an answered poll: HTTP 200, no gRPC error status, one message.
fn answered(headers: &[EnvoyHeader], body: &[EnvoyBuffer]) -> Option<feed::State> {
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            let key = unsafe { std::slice::from_raw_parts(h.key_ptr, h.key_len) };
            (key == name.as_bytes())
                .then(|| unsafe { std::slice::from_raw_parts(h.value_ptr, h.value_len) })
        })
    };
    if header(":status") != Some(b"200") {
        return None;
    }
    if header("grpc-status").is_some_and(|s| s != b"0") {
        return None;
    }
    let mut bytes = Vec::new();
    for chunk in body {
        bytes.extend_from_slice(unsafe { chunk.bytes() });
    }
    feed::parse_answer(&bytes)
}

impl Drop for Config {
    fn drop(&mut self) {
        {
            let (lock, wake) = &*self.schedule;
            lock.lock().unwrap_or_else(|e| e.into_inner()).stop = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(api) = crate::api() {
            unsafe { (api.config_scheduler_delete)(self.scheduler) }
        }
    }
}

fn run_schedule(schedule: &(Mutex<Schedule>, Condvar), scheduler: Scheduler) {
    let (lock, wake) = schedule;
    let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if state.stop {
            return;
        }
        let now = Instant::now();
        match state.due {
            Some(due) if due <= now => {
                state.due = None;
                drop(state);
                if let Some(api) = crate::api() {
                    unsafe { (api.config_scheduler_commit)(scheduler.0, EVENT_POLL) }
                }
                state = lock.lock().unwrap_or_else(|e| e.into_inner());
            }
            Some(due) => {
                state = wake
                    .wait_timeout(state, due - now)
                    .map(|(s, _)| s)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            None => state = wake.wait(state).unwrap_or_else(|e| e.into_inner()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_and_refuse_what_cannot_work() {
        let s = Settings::parse(b"").unwrap();
        assert_eq!(s.cluster, "keyward_ext_authz");
        let s = Settings::parse(br#"{"feed_wait_ms":200,"feed_stale_ms":400}"#).unwrap();
        assert_eq!(s.feed_stale_ms, 400);
        assert!(Settings::parse(br#"{"feed_wait_ms":500,"feed_stale_ms":400}"#).is_err());
        assert!(Settings::parse(br#"{"clustr":"x"}"#).is_err());
        assert!(Settings::parse(b"\xff").is_err());
        assert_eq!(s.check_timeout_ms, 500);
        assert!(Settings::parse(br#"{"check_timeout_ms":0}"#).is_err());
    }
}
