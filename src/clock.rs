//! The clocks, the one place keyward reads the time: the wall clock in Unix seconds, and a
//! cheap monotonic clock in milliseconds for bounds that must not move with the wall clock.
//! Decisions take `now` as an argument, so they stay pure and testable.

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds on the system's coarse monotonic clock (a few ms of resolution, a few ns to
/// read: cheap enough for every Check). It keeps counting while the process is stopped
/// (SIGSTOP), which is what bounds on the age of cached data need.
pub fn monotonic_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    now.tv_sec as u64 * 1_000 + now.tv_nsec as u64 / 1_000_000
}
