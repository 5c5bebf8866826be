//! Whether the store is known to be down. After a failure to reach it, callers are answered
//! "unavailable" at once instead of each waiting out the pool's acquire timeout (seconds, past
//! Envoy's timeout), except one probe per interval, which finds out when the store is back.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// How often, while the store is down, one caller goes through to try it.
pub const PROBE_INTERVAL_MS: i64 = 250;

#[derive(Debug, Default)]
pub struct Availability {
    down: AtomicBool,
    next_probe_ms: AtomicI64,
}

impl Availability {
    /// Whether a caller may use the store at `now_ms`: always while it is up; while it is down,
    /// the first caller of each probe interval.
    pub fn admit(&self, now_ms: i64) -> bool {
        if !self.down.load(Ordering::Acquire) {
            return true;
        }
        let next = self.next_probe_ms.load(Ordering::Acquire);
        now_ms >= next
            && self
                .next_probe_ms
                .compare_exchange(
                    next,
                    now_ms + PROBE_INTERVAL_MS,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Records whether the store could be reached at `now_ms`.
    pub fn record(&self, reachable: bool, now_ms: i64) {
        if reachable {
            self.down.store(false, Ordering::Release);
        } else {
            self.next_probe_ms
                .store(now_ms + PROBE_INTERVAL_MS, Ordering::Release);
            self.down.store(true, Ordering::Release);
        }
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_fail_fast_but_one_probe_per_interval() {
        let a = Availability::default();
        // (event, now_ms, admitted or recorded, down afterwards)
        enum E {
            Admit(bool),
            Record(bool),
        }
        let table = [
            (E::Admit(true), 0, false),
            (E::Record(false), 10, true),
            (E::Admit(false), 11, true),
            (E::Admit(false), 259, true),
            (E::Admit(true), 260, true),
            (E::Admit(false), 261, true),
            (E::Admit(true), 600, true),
            (E::Record(false), 700, true),
            (E::Admit(false), 800, true),
            (E::Admit(true), 950, true),
            (E::Record(true), 960, false),
            (E::Admit(true), 961, false),
            (E::Admit(true), 961, false),
        ];
        for (i, (event, now, down)) in table.into_iter().enumerate() {
            match event {
                E::Admit(expected) => assert_eq!(a.admit(now), expected, "row {i}"),
                E::Record(reachable) => a.record(reachable, now),
            }
            assert_eq!(a.is_down(), down, "row {i}");
        }
    }
}
