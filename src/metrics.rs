//! Prometheus metrics, served on the health port's `/metrics` in the text exposition format by
//! `metrics-exporter-prometheus` behind the `metrics` facade.
//!
//! Cardinality is bounded by construction: every label takes its values from a closed set
//! written in this module (decision results, denial and error codes, planes), never a key id,
//! a principal, a project or a deployment. The Check path uses handles resolved once
//! ([`CheckMetrics`]), so recording is an atomic add, never a registry lookup.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Histogram, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::model::Plane;

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
    "other",
];
const ERROR_CODES: &[&str] = &["overloaded", "storage_unavailable", "internal", "other"];
const RESULTS: [(&str, &[&str]); 3] = [
    ("allow", ALLOW_CODES),
    ("deny", DENY_CODES),
    ("error", ERROR_CODES),
];
const PLANES: [&str; 3] = ["data", "control", "none"];

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
