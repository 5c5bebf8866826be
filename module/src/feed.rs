//! Following keyward's change feed: `keyward.module.v1.Feed/Poll`, a gRPC long poll sent over
//! the ext_authz cluster from the filter configuration (Envoy's main thread), and what the
//! module knows of it.
//!
//! keyward answers a poll as soon as its state (`instance`, `epoch`) differs from the one the
//! poll carries, or after `wait_ms` with the same. Any difference starts a new generation: every
//! entry learnt before stops serving. Hits are served only while the feed is known good: for
//! `stale_ms` after the last answer, and not at all from the moment a poll fails.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The gRPC method path.
pub const POLL_PATH: &str = "/keyward.module.v1.Feed/Poll";

/// keyward's state as one replica reports it: its instance (a new one on each start) and how
/// many changes it has applied since.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub instance: String,
    pub epoch: u64,
}

/// What the module knows of the feed. Shared by Envoy's main thread (polls) and workers.
#[derive(Default)]
pub struct Feed {
    heard: Mutex<Option<State>>,
    generation: AtomicU64,
    serving_until_ms: AtomicU64,
}

impl Feed {
    /// The generation entries are learnt in and served from.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether hits may be answered at `now_ms`.
    pub fn serving(&self, now_ms: u64) -> bool {
        now_ms < self.serving_until_ms.load(Ordering::Acquire)
    }

    /// A poll answered `state` at `now_ms`: a state other than the last one heard starts a new
    /// generation (returns true). Hits are served until `now_ms + stale_ms`.
    pub fn heard(&self, state: State, now_ms: u64, stale_ms: u64) -> bool {
        let mut heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let changed = heard.as_ref() != Some(&state);
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            *heard = Some(state);
        }
        self.serving_until_ms
            .store(now_ms.saturating_add(stale_ms), Ordering::Release);
        changed
    }

    /// A poll failed: no hit until a poll is answered again.
    pub fn lost(&self) {
        self.serving_until_ms.store(0, Ordering::Release);
    }

    /// The generation an allow keyward decided at `decided` may be learnt in: only when it was
    /// decided by the replica the feed follows, at or after the state last heard (a decision
    /// older than a change the feed reported must not come back as a hit).
    pub fn learnable(&self, decided: &State) -> Option<u64> {
        let heard = self.heard.lock().unwrap_or_else(|e| e.into_inner());
        let heard = heard.as_ref()?;
        (heard.instance == decided.instance && decided.epoch >= heard.epoch)
            .then(|| self.generation())
    }

    /// The last state heard, for the next poll.
    pub fn last(&self) -> State {
        self.heard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

/// The gRPC request body (length-prefixed message) of a poll.
pub fn poll_body(last: &State, wait_ms: u64) -> Vec<u8> {
    let mut message = Vec::with_capacity(32 + last.instance.len());
    if !last.instance.is_empty() {
        message.push(0x0a);
        varint(&mut message, last.instance.len() as u64);
        message.extend_from_slice(last.instance.as_bytes());
    }
    message.push(0x10);
    varint(&mut message, last.epoch);
    message.push(0x18);
    varint(&mut message, wait_ms);
    let mut body = Vec::with_capacity(5 + message.len());
    body.push(0);
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    body
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// The state in a poll's gRPC response body; `None` for anything else (an empty body is what
/// a gRPC error looks like here, its status being in the trailers).
pub fn parse_answer(body: &[u8]) -> Option<State> {
    let (&compressed, rest) = body.split_first()?;
    if compressed != 0 || rest.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    let mut message = rest.get(4..4 + len)?;
    let mut state = State::default();
    let mut instance = false;
    while !message.is_empty() {
        let tag = read_varint(&mut message)?;
        match (tag >> 3, tag & 7) {
            (1, 2) => {
                let len = read_varint(&mut message)? as usize;
                let value = message.get(..len)?;
                state.instance = std::str::from_utf8(value).ok()?.to_owned();
                message = &message[len..];
                instance = true;
            }
            (2, 0) => state.epoch = read_varint(&mut message)?,
            (_, 0) => {
                read_varint(&mut message)?;
            }
            (_, 2) => {
                let len = read_varint(&mut message)? as usize;
                message = message.get(len..)?;
            }
            (_, 1) => message = message.get(8..)?,
            (_, 5) => message = message.get(4..)?,
            _ => return None,
        }
    }
    instance.then_some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(instance: &str, epoch: u64) -> Vec<u8> {
        // PollResponse encodes like the request's first two fields.
        let mut body = poll_body(
            &State {
                instance: instance.into(),
                epoch,
            },
            0,
        );
        // Drop the wait_ms field (0x18 0x00) and fix the length.
        body.truncate(body.len() - 2);
        let len = (body.len() - 5) as u32;
        body[1..5].copy_from_slice(&len.to_be_bytes());
        body
    }

    #[test]
    fn answers_parse_and_garbage_does_not() {
        let state = parse_answer(&answer("i-1", 300)).unwrap();
        assert_eq!(state.instance, "i-1");
        assert_eq!(state.epoch, 300);
        assert_eq!(parse_answer(&[]), None);
        assert_eq!(parse_answer(&[0, 0, 0, 0, 0]), None, "no instance");
        assert_eq!(parse_answer(&[1, 0, 0, 0, 0]), None, "compressed");
        assert_eq!(parse_answer(&[0, 0, 0, 0, 9, 0x0a]), None, "truncated");
    }

    #[test]
    fn a_change_starts_a_generation_and_old_decisions_are_not_learnt() {
        let feed = Feed::default();
        let at = |epoch| State {
            instance: "a".into(),
            epoch,
        };
        assert_eq!(feed.learnable(&at(1)), None, "nothing heard yet");
        assert!(!feed.serving(0));
        assert!(feed.heard(at(5), 1_000, 500));
        let generation = feed.generation();
        assert!(feed.serving(1_499) && !feed.serving(1_500));
        assert!(!feed.heard(at(5), 1_200, 500), "the same state");
        assert_eq!(feed.generation(), generation);
        assert_eq!(feed.learnable(&at(5)), Some(generation));
        assert_eq!(
            feed.learnable(&at(4)),
            None,
            "decided before a change heard of"
        );
        let other = State {
            instance: "b".into(),
            epoch: 9,
        };
        assert_eq!(feed.learnable(&other), None, "another replica");
        assert!(feed.heard(at(6), 1_300, 500));
        assert!(feed.generation() > generation);
        feed.lost();
        assert!(!feed.serving(1_301));
    }
}
