//! The decisions this Envoy may answer itself: allows keyward made, keyed by a SHA-256 digest
//! of the route context and the whole token (never the token), bounded in count, each valid
//! until its own deadline and only while the generation it was learnt in is current.
//!
//! Only allows are kept. A denial answered from here would let a client probe which tokens
//! keyward knows without reaching keyward's per-key limits, and a cached 401 for a key that
//! becomes valid (expiry extended) would lock it out until the entry expired; keyward answers
//! every denial itself.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

/// What a hit puts on the request: keyward's identity headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub key_id: Box<str>,
    pub principal: Box<str>,
    pub project: Box<str>,
    pub deployment: Box<str>,
}

/// One allow, and what it holds for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub identity: Identity,
    /// The module generation (feed state) it was learnt in: any later change ends it.
    pub generation: u64,
    /// Milliseconds on the module's clock after which it is not used.
    pub until_ms: u64,
    /// The source IP the decision was made for, when a condition read it.
    pub source_ip: Option<Box<str>>,
    /// The user agent the decision was made for, when a condition read it.
    pub user_agent: Option<Box<str>>,
}

/// The request facts an entry may depend on.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    pub source_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

impl Entry {
    /// Whether it serves a request; `facts` are read only when the entry depends on them.
    fn serves<'f>(&self, generation: u64, now_ms: u64, facts: impl FnOnce() -> Facts<'f>) -> bool {
        if self.generation != generation || now_ms >= self.until_ms {
            return false;
        }
        if self.source_ip.is_none() && self.user_agent.is_none() {
            return true;
        }
        let facts = facts();
        self.source_ip
            .as_deref()
            .is_none_or(|ip| facts.source_ip == Some(ip))
            && self
                .user_agent
                .as_deref()
                .is_none_or(|ua| facts.user_agent == Some(ua))
    }
}

/// The cache key: SHA-256 over the route context and the token, length-prefixed so no two
/// (context, token) pairs share an input.
pub fn digest(context: &str, token: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update((context.len() as u64).to_le_bytes());
    hash.update(context.as_bytes());
    hash.update(token);
    hash.finalize().into()
}

const SHARDS: usize = 16;

/// Longest identity field kept: anything longer is not cached (keyward bounds its names well
/// below this), so an entry's size is bounded and `capacity` bounds memory.
pub const MAX_FIELD: usize = 256;

/// Sharded by the digest's first byte, so workers rarely wait on one another.
pub struct DecisionCache {
    shards: Vec<RwLock<HashMap<[u8; 32], Entry>>>,
    per_shard: usize,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> Self {
        DecisionCache {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> &RwLock<HashMap<[u8; 32], Entry>> {
        &self.shards[key[0] as usize % SHARDS]
    }

    /// Whether an entry serves this request; when one does, `answer` runs with its identity
    /// (under the shard's read lock: nothing is copied on the hit path).
    pub fn serve<'f>(
        &self,
        key: &[u8; 32],
        generation: u64,
        now_ms: u64,
        facts: impl FnOnce() -> Facts<'f>,
        answer: impl FnOnce(&Identity),
    ) -> bool {
        let shard = self.shard(key).read().unwrap_or_else(|e| e.into_inner());
        match shard.get(key) {
            Some(entry) if entry.serves(generation, now_ms, facts) => {
                answer(&entry.identity);
                true
            }
            _ => false,
        }
    }

    /// The identity [`Self::serve`] would answer with.
    #[cfg(test)]
    fn lookup<'f>(
        &self,
        key: &[u8; 32],
        generation: u64,
        now_ms: u64,
        facts: impl FnOnce() -> Facts<'f>,
    ) -> Option<Identity> {
        let mut found = None;
        self.serve(key, generation, now_ms, facts, |identity| {
            found = Some(identity.clone())
        });
        found
    }

    /// Keeps `entry`; a full shard first drops what can no longer serve, then any one entry.
    pub fn insert(&self, key: [u8; 32], entry: Entry, generation: u64, now_ms: u64) {
        let fields = [
            &entry.identity.key_id,
            &entry.identity.principal,
            &entry.identity.project,
            &entry.identity.deployment,
        ];
        let too_long = fields.iter().any(|f| f.len() > MAX_FIELD)
            || entry
                .source_ip
                .as_ref()
                .is_some_and(|v| v.len() > MAX_FIELD)
            || entry
                .user_agent
                .as_ref()
                .is_some_and(|v| v.len() > MAX_FIELD);
        if too_long {
            return;
        }
        let mut shard = self.shard(&key).write().unwrap_or_else(|e| e.into_inner());
        if shard.len() >= self.per_shard && !shard.contains_key(&key) {
            shard.retain(|_, e| e.generation == generation && now_ms < e.until_ms);
            if shard.len() >= self.per_shard
                && let Some(victim) = shard.keys().next().copied()
            {
                shard.remove(&victim);
            }
        }
        shard.insert(key, entry);
    }

    /// Drops every entry (a change on the feed; entries of older generations never serve, this
    /// frees their memory).
    pub fn clear(&self) {
        for shard in &self.shards {
            shard.write().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u64, until_ms: u64) -> Entry {
        Entry {
            identity: Identity {
                key_id: "k1".into(),
                principal: "app".into(),
                project: "acme".into(),
                deployment: "acme/chat".into(),
            },
            generation,
            until_ms,
            source_ip: None,
            user_agent: None,
        }
    }

    #[test]
    fn an_entry_serves_its_context_generation_deadline_and_facts_only() {
        let cache = DecisionCache::new(100);
        let key = digest("data|public|acme/chat", b"ik_live_x");
        let other_route = digest("data|public|acme/other", b"ik_live_x");
        cache.insert(key, entry(3, 1_000), 3, 0);
        let none = Facts::default;
        assert!(cache.lookup(&key, 3, 999, none).is_some());
        assert!(cache.lookup(&other_route, 3, 10, none).is_none());
        assert!(
            cache.lookup(&key, 4, 10, none).is_none(),
            "a later generation"
        );
        assert!(
            cache.lookup(&key, 3, 1_000, none).is_none(),
            "past its deadline"
        );

        let ip_bound = Entry {
            source_ip: Some("10.0.0.1".into()),
            user_agent: Some("sdk/1".into()),
            ..entry(3, 1_000)
        };
        cache.insert(key, ip_bound, 3, 0);
        let same = Facts {
            source_ip: Some("10.0.0.1"),
            user_agent: Some("sdk/1"),
        };
        assert!(cache.lookup(&key, 3, 10, || same).is_some());
        for other in [
            Facts {
                source_ip: Some("10.0.0.2"),
                ..same
            },
            Facts {
                user_agent: Some("curl"),
                ..same
            },
            Facts {
                source_ip: None,
                ..same
            },
        ] {
            assert!(cache.lookup(&key, 3, 10, || other).is_none(), "{other:?}");
        }
    }

    #[test]
    fn the_count_is_bounded_and_stale_entries_go_first() {
        let cache = DecisionCache::new(32);
        for i in 0..1_000u32 {
            let key = digest("ctx", &i.to_le_bytes());
            cache.insert(key, entry(1, 100), 1, 0);
        }
        assert!(cache.len() <= 32, "{}", cache.len());
        let long = Entry {
            identity: Identity {
                principal: "p".repeat(MAX_FIELD + 1).into(),
                ..entry(1, 100).identity
            },
            ..entry(1, 100)
        };
        let key = digest("ctx", b"long");
        cache.insert(key, long, 1, 0);
        assert!(cache.lookup(&key, 1, 0, Facts::default).is_none());
        cache.clear();
        assert!(cache.is_empty());
    }

    #[test]
    fn digests_separate_context_from_token() {
        assert_ne!(digest("ab", b"c"), digest("a", b"bc"));
    }
}
