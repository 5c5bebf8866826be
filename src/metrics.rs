//! Prometheus metrics, served on the health port's `/metrics` in the text exposition format by
//! `metrics-exporter-prometheus` behind the `metrics` facade.
//!
//! Cardinality is bounded by construction: every label takes its values from a closed set
//! written in this module, never a key id, a principal, a project, a deployment or a route:
//!
//! | metric | labels (every value) |
//! |---|---|
//! | `keyward_check_decisions_total` | `result` × `code` ([`RESULTS`]) × `plane` ([`PLANES`]) |
//! | `keyward_check_duration_seconds`, `keyward_ready` | none |
//! | `keyward_cache_requests_total` | `cache` ([`CACHES`]) × `result` (`hit`, `miss`) |
//! | `keyward_cache_evictions_total` | `cache` ([`CACHES`]) × `reason` (`size`, `expired`) |
//! | `keyward_argon2_queue_depth`, `keyward_argon2_verifications_total`, `keyward_argon2_wait_seconds` | none |
//! | `keyward_argon2_shed_total` | `reason` (`queue_full`, `key_budget`) |
//! | `keyward_store_duration_seconds`, `keyward_store_errors_total` | `op` ([`STORE_OPS`]) |
//! | `keyward_propagation_connected`, `keyward_propagation_reconnects_total`, `keyward_propagation_lag_seconds` | none |
//! | `keyward_propagation_changes_total`, `keyward_admin_writes_total` | `kind` ([`CHANGE_KINDS`]) |
//!
//! so a replica exports at most a few hundred series, whatever its keys and deployments. The
//! Check path uses handles resolved once ([`CheckMetrics`], [`CacheLookups`]): recording is an
//! atomic add, never a registry lookup, a lock or an allocation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use moka::notification::RemovalCause;

use crate::model::Plane;
use crate::store::Change;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle (later calls return the same
/// one). Handles taken before this are no-ops: call it before building the services.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let latency = [
            0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
            0.05, 0.1, 0.25, 0.5, 1.0,
        ];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test harness's) already installed: ours still renders, empty.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// The exposition text for `/metrics`.
pub fn render() -> String {
    install().render()
}

/// Drains histogram samples into their buckets; the server runs it every few seconds so that
/// memory stays flat between scrapes.
pub fn upkeep() {
    publish_lookups();
    install().run_upkeep();
}

fn describe() {
    describe_counter!(
        "keyward_check_decisions_total",
        "Check answers by result (allow, deny, error), denial or error code, and route plane"
    );
    describe_histogram!(
        "keyward_check_duration_seconds",
        metrics::Unit::Seconds,
        "Time keyward took to answer a Check, from request to response"
    );
    describe_gauge!(
        "keyward_ready",
        "1 while this replica is ready for Checks (as /readyz and grpc.health.v1 say), else 0"
    );
    describe_counter!(
        "keyward_cache_requests_total",
        "Lookups in each in-memory cache, by hit or miss (a miss loads from the store)"
    );
    describe_counter!(
        "keyward_cache_evictions_total",
        "Entries a cache dropped on its own: over capacity (size) or past its TTL (expired)"
    );
    describe_gauge!(
        "keyward_argon2_queue_depth",
        "argon2 verifications waiting for or running on a worker (at most verify.workers + verify.queue)"
    );
    describe_counter!(
        "keyward_argon2_verifications_total",
        "argon2 verifications run (what the caches exist to avoid)"
    );
    describe_histogram!(
        "keyward_argon2_wait_seconds",
        metrics::Unit::Seconds,
        "Time a verification waited in the queue before a worker took it"
    );
    describe_counter!(
        "keyward_argon2_shed_total",
        "Checks shed (Envoy answers 503): the queue was full, or the key id held all it may"
    );
    describe_histogram!(
        "keyward_store_duration_seconds",
        metrics::Unit::Seconds,
        "Time of the store reads behind cache misses and readiness, by operation"
    );
    describe_counter!(
        "keyward_store_errors_total",
        "Store reads that failed (database unreachable or erroring), by operation"
    );
    describe_gauge!(
        "keyward_propagation_connected",
        "1 while this replica follows other replicas' changes (LISTEN connected, or polls succeed), else 0"
    );
    describe_counter!(
        "keyward_propagation_reconnects_total",
        "Times the change feed was lost and regained (each one flushes the caches)"
    );
    describe_histogram!(
        "keyward_propagation_lag_seconds",
        metrics::Unit::Seconds,
        "From another replica's committed write to this replica applying it (PostgreSQL NOTIFY)"
    );
    describe_counter!(
        "keyward_propagation_changes_total",
        "Other replicas' change events applied here, by kind of object changed"
    );
    describe_counter!(
        "keyward_admin_writes_total",
        "Change events of this replica's admin writes, by kind of object changed"
    );
}

/// The `code` label's whole set for each result. A code outside its list counts as `other`.
const ALLOW_CODES: &[&str] = &["none"];
const DENY_CODES: &[&str] = &[
    "missing_api_key",
    "invalid_api_key",
    "wrong_plane",
    "key_not_in_scope",
    "unknown_deployment",
    "permission_denied",
    "conditions_not_met",
    "route_not_configured",
    "not_found",
    "other",
];
const ERROR_CODES: &[&str] = &["overloaded", "storage_unavailable", "internal", "other"];
pub const RESULTS: [(&str, &[&str]); 3] = [
    ("allow", ALLOW_CODES),
    ("deny", DENY_CODES),
    ("error", ERROR_CODES),
];
pub const PLANES: [&str; 3] = ["data", "control", "none"];

/// What one Check answered, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Allow,
    Deny(&'static str),
    Error(&'static str),
}

/// Pre-resolved handles for the Check path.
#[derive(Clone)]
pub struct CheckMetrics {
    /// `decisions[result][code][plane]`, in the order of [`RESULTS`] and [`PLANES`].
    decisions: Vec<Vec<[Counter; 3]>>,
    duration: Histogram,
}

impl Default for CheckMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CheckMetrics {
    pub fn new() -> Self {
        let decisions = RESULTS
            .iter()
            .map(|(result, codes)| {
                codes
                    .iter()
                    .map(|code| {
                        PLANES.map(|plane| {
                            counter!(
                                "keyward_check_decisions_total",
                                "result" => *result, "code" => *code, "plane" => plane
                            )
                        })
                    })
                    .collect()
            })
            .collect();
        CheckMetrics {
            decisions,
            duration: histogram!("keyward_check_duration_seconds"),
        }
    }

    pub fn record(&self, outcome: Outcome, plane: Option<Plane>, took: Duration) {
        let (result, code) = match outcome {
            Outcome::Allow => (0, "none"),
            Outcome::Deny(code) => (1, code),
            Outcome::Error(code) => (2, code),
        };
        let codes = RESULTS[result].1;
        let code = codes
            .iter()
            .position(|known| *known == code)
            .unwrap_or(codes.len() - 1);
        let plane = match plane {
            Some(Plane::Data) => 0,
            Some(Plane::Control) => 1,
            None => 2,
        };
        self.decisions[result][code][plane].increment(1);
        self.duration.record(took.as_secs_f64());
    }
}

/// Readiness as a gauge (1 ready, 0 not), kept current by the server's probe loop.
pub fn readiness() -> Gauge {
    gauge!("keyward_ready")
}

/// The `cache` label's whole set.
pub const CACHES: [&str; 6] = [
    "keys",
    "verdicts",
    "deployments",
    "grants",
    "workloads",
    "routes",
];

/// Hits and misses of every cache, by [`CACHES`] index: plain atomics on the Check path (one
/// relaxed add a lookup), moved into the `keyward_cache_requests_total` counters by [`upkeep`]
/// (every scrape, and every 5 s). A `metrics` counter handle costs a dynamic call and two
/// atomics an increment; on a cache hit that was a measurable share of the whole Check.
static LOOKUPS: [[AtomicU64; 2]; CACHES.len()] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; CACHES.len()];

/// Hit and miss counts of one cache.
pub struct Lookups {
    cache: usize,
}

impl Lookups {
    fn new(cache: &'static str) -> Self {
        Lookups {
            cache: CACHES.iter().position(|c| *c == cache).unwrap_or(0),
        }
    }

    pub fn hit(&self) {
        LOOKUPS[self.cache][0].fetch_add(1, Ordering::Relaxed);
    }

    pub fn miss(&self) {
        LOOKUPS[self.cache][1].fetch_add(1, Ordering::Relaxed);
    }
}

/// Moves the lookups counted since the last call into the Prometheus counters.
fn publish_lookups() {
    for (cache, counts) in CACHES.iter().zip(&LOOKUPS) {
        for (result, count) in ["hit", "miss"].into_iter().zip(counts) {
            let n = count.swap(0, Ordering::Relaxed);
            if n > 0 {
                counter!("keyward_cache_requests_total", "cache" => *cache, "result" => result)
                    .increment(n);
            }
        }
    }
}

/// Pre-resolved hit/miss counters of every cache the directory reads through.
pub struct CacheLookups {
    pub keys: Lookups,
    pub verdicts: Lookups,
    pub deployments: Lookups,
    pub grants: Lookups,
    pub workloads: Lookups,
    pub routes: Lookups,
}

impl Default for CacheLookups {
    fn default() -> Self {
        let [keys, verdicts, deployments, grants, workloads, routes] = CACHES.map(Lookups::new);
        CacheLookups {
            keys,
            verdicts,
            deployments,
            grants,
            workloads,
            routes,
        }
    }
}

/// A moka eviction listener counting what `cache` drops on its own (capacity, TTL); explicit
/// invalidations and replacements are not evictions.
pub fn evictions<K, V>(cache: &'static str) -> impl Fn(std::sync::Arc<K>, V, RemovalCause) {
    let size = counter!("keyward_cache_evictions_total", "cache" => cache, "reason" => "size");
    let expired =
        counter!("keyward_cache_evictions_total", "cache" => cache, "reason" => "expired");
    move |_, _, cause| match cause {
        RemovalCause::Size => size.increment(1),
        RemovalCause::Expired => expired.increment(1),
        RemovalCause::Explicit | RemovalCause::Replaced => {}
    }
}

/// The argon2 verification queue: depth, waits, runs and sheds.
#[derive(Clone)]
pub struct Argon2Metrics {
    depth: Gauge,
    wait: Histogram,
    verifications: Counter,
    shed_queue_full: Counter,
    shed_key_budget: Counter,
}

impl Default for Argon2Metrics {
    fn default() -> Self {
        Argon2Metrics {
            depth: gauge!("keyward_argon2_queue_depth"),
            wait: histogram!("keyward_argon2_wait_seconds"),
            verifications: counter!("keyward_argon2_verifications_total"),
            shed_queue_full: counter!("keyward_argon2_shed_total", "reason" => "queue_full"),
            shed_key_budget: counter!("keyward_argon2_shed_total", "reason" => "key_budget"),
        }
    }
}

/// One verification's place in [`Argon2Metrics`]' depth, given back when dropped.
pub struct Queued(Gauge);

impl Drop for Queued {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Argon2Metrics {
    /// Counts one more verification waiting or running until the returned guard is dropped.
    pub fn queued(&self) -> Queued {
        self.depth.increment(1.0);
        Queued(self.depth.clone())
    }

    /// A worker took a verification that waited `waited`.
    pub fn started(&self, waited: Duration) {
        self.wait.record(waited.as_secs_f64());
        self.verifications.increment(1);
    }

    /// A Check was shed: the whole queue was full (`key_budget: false`), or its key id held all
    /// the places it may.
    pub fn shed(&self, key_budget: bool) {
        match key_budget {
            true => self.shed_key_budget.increment(1),
            false => self.shed_queue_full.increment(1),
        }
    }
}

/// The `op` label's whole set: the store reads keyward makes outside admin writes.
pub const STORE_OPS: [&str; 6] = ["key", "deployment", "grants", "workload", "routes", "ping"];

/// A store read, as the metrics name it.
#[derive(Debug, Clone, Copy)]
pub enum StoreOp {
    Key,
    Deployment,
    Grants,
    Workload,
    Routes,
    Ping,
}

/// Latency and errors of store reads, by [`StoreOp`].
pub struct StoreMetrics {
    duration: [Histogram; 6],
    errors: [Counter; 6],
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            duration: STORE_OPS.map(|op| histogram!("keyward_store_duration_seconds", "op" => op)),
            errors: STORE_OPS.map(|op| counter!("keyward_store_errors_total", "op" => op)),
        }
    }
}

impl StoreMetrics {
    /// Runs `read`, recording its time and whether it failed.
    pub async fn time<T, E>(
        &self,
        op: StoreOp,
        read: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let result = read.await;
        self.duration[op as usize].record(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors[op as usize].increment(1);
        }
        result
    }
}

/// The `kind` label's whole set: one per [`Change`] variant.
pub const CHANGE_KINDS: [&str; 8] = [
    "key",
    "deployment",
    "project",
    "principal",
    "policy",
    "permission_set",
    "workload",
    "route",
];

fn kind_of(change: &Change) -> usize {
    match change {
        Change::Key(_) => 0,
        Change::Deployment(_) => 1,
        Change::Project(_) => 2,
        Change::Principal(_) => 3,
        Change::Policy(_) => 4,
        Change::PermissionSet(_) => 5,
        Change::Workload(_) => 6,
        Change::Route(_) => 7,
    }
}

/// Counts change events by kind (`keyward_admin_writes_total` for this replica's own writes,
/// `keyward_propagation_changes_total` for other replicas').
pub struct ChangeCounts([Counter; 8]);

impl ChangeCounts {
    pub fn admin_writes() -> Self {
        ChangeCounts(
            CHANGE_KINDS.map(|kind| counter!("keyward_admin_writes_total", "kind" => kind)),
        )
    }

    pub fn propagated() -> Self {
        ChangeCounts(
            CHANGE_KINDS.map(|kind| counter!("keyward_propagation_changes_total", "kind" => kind)),
        )
    }

    pub fn count(&self, change: &Change) {
        self.0[kind_of(change)].increment(1);
    }
}

/// The change feed between replicas: connected or not, reconnects, lag, changes applied.
pub struct PropagationMetrics {
    connected: Gauge,
    reconnects: Counter,
    lag: Histogram,
    pub changes: ChangeCounts,
}

impl Default for PropagationMetrics {
    fn default() -> Self {
        PropagationMetrics {
            connected: gauge!("keyward_propagation_connected"),
            reconnects: counter!("keyward_propagation_reconnects_total"),
            lag: histogram!("keyward_propagation_lag_seconds"),
            changes: ChangeCounts::propagated(),
        }
    }
}

impl PropagationMetrics {
    pub fn connected(&self, connected: bool) {
        self.connected.set(if connected { 1.0 } else { 0.0 });
    }

    /// The feed is back after being lost.
    pub fn reconnected(&self) {
        self.reconnects.increment(1);
    }

    /// A change committed at `sent_at_ms` (Unix milliseconds, the writer's clock) is applied
    /// now. Clocks of different hosts may disagree: a negative lag counts as zero.
    pub fn applied_after(&self, sent_at_ms: i64) {
        let lag_ms = crate::clock::now_unix_ms()
            .saturating_sub(sent_at_ms)
            .max(0);
        self.lag.record(lag_ms as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_outcomes_land_on_their_own_labels_and_unknown_codes_on_other() {
        let _ = install();
        let check = CheckMetrics::new();
        check.record(
            Outcome::Deny("wrong_plane"),
            Some(Plane::Control),
            Duration::from_micros(3),
        );
        check.record(
            Outcome::Deny("not_a_code"),
            Some(Plane::Data),
            Duration::ZERO,
        );
        check.record(Outcome::Allow, Some(Plane::Data), Duration::ZERO);
        let text = render();
        for line in [
            r#"keyward_check_decisions_total{result="deny",code="wrong_plane",plane="control"} 1"#,
            r#"keyward_check_decisions_total{result="deny",code="other",plane="data"} 1"#,
            r#"keyward_check_decisions_total{result="allow",code="none",plane="data"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
