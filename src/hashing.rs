//! argon2id hashing and verification of key secrets, on reused working memory.
//!
//! argon2 needs `m` KiB of working memory per call: 19 MiB at keyward's defaults. Allocating it
//! per call looks free and is not. glibc keeps a freed block that large in the arena of the thread
//! that freed it, and tokio's blocking pool runs verifications on whichever of its threads is
//! idle, so a server that had verified 32 keys held ~115 MiB it would never use again
//! (`examples/memory_100k`). Here the memory is a pool of buffers reused from call to call. The
//! caller bounds how many calls run at once (`verify.workers`), and so how many buffers the pool
//! ever holds; the pool also keeps at most that many, and none larger than the configured
//! parameters need (a PHC string from an older, costlier configuration gets a buffer of its own).
//!
//! A returned buffer still holds the last computation's blocks. They are not zeroed (19 MiB a
//! call): they reveal no more than the SHA-256 token digests the key cache keeps anyway, and
//! keyward's secrets are generated with enough entropy that neither can be searched.

use std::sync::{Mutex, PoisonError};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{self, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// The largest salt a PHC string may carry (`argon2::MAX_SALT_LEN`).
const MAX_SALT_LEN: usize = 64;

pub struct Hasher {
    /// What new hashes are computed with; verification uses each PHC string's own parameters.
    params: Params,
    memory: Mutex<Vec<Vec<Block>>>,
    /// The most buffers kept for reuse: the caller's bound on concurrent calls.
    max_pooled: usize,
}

impl Hasher {
    /// A hasher creating new hashes at `params`, keeping at most `max_pooled` buffers.
    pub fn new(params: Params, max_pooled: usize) -> Self {
        Hasher {
            params,
            memory: Mutex::new(Vec::new()),
            max_pooled,
        }
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt. CPU-bound for tens of
    /// milliseconds: call it off the async workers.
    pub fn hash(&self, secret: &[u8]) -> Result<String, password_hash::Error> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; MAX_SALT_LEN];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, self.params.clone());
        let output_len = self
            .params
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let output = self.with_memory(self.params.block_count(), |memory| {
            Output::init_with(output_len, |out| {
                argon
                    .hash_password_into_with_memory(secret, salt_bytes, out, memory)
                    .map_err(password_hash::Error::from)
            })
        })?;
        Ok(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)?,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        }
        .to_string())
    }

    /// Whether `secret` is the one `phc` was computed from, under the algorithm, version and
    /// parameters `phc` names. The outputs are compared in constant time (`Output`'s equality).
    /// A PHC string that does not parse can never match: a failed verification, not an error.
    /// CPU-bound: call it off the async workers.
    pub fn verify(&self, secret: &[u8], phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = Algorithm::try_from(parsed.algorithm) else {
            return false;
        };
        let Ok(version) = parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from)
        else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        let mut salt_bytes = [0u8; MAX_SALT_LEN];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
            return false;
        };
        let blocks = params.block_count();
        let argon = Argon2::new(algorithm, version, params);
        self.with_memory(blocks, |memory| {
            Output::init_with(expected.len(), |out| {
                argon
                    .hash_password_into_with_memory(secret, salt_bytes, out, memory)
                    .map_err(password_hash::Error::from)
            })
        })
        .is_ok_and(|computed| computed == expected)
    }

    /// Runs `f` on at least `blocks` blocks of working memory taken from the pool, and returns
    /// them to it unless the pool is full or they exceed what the configured parameters need.
    fn with_memory<R>(&self, blocks: usize, f: impl FnOnce(&mut [Block]) -> R) -> R {
        let pool = || self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        let mut memory = pool().pop().unwrap_or_default();
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        let result = f(&mut memory[..blocks]);
        if memory.len() <= self.params.block_count() {
            let mut pool = pool();
            if pool.len() < self.max_pooled {
                pool.push(memory);
            }
        }
        result
    }

    #[cfg(test)]
    fn pooled_buffers(&self) -> usize {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use argon2::PasswordVerifier;

    use super::*;

    fn cheap() -> Hasher {
        Hasher::new(Params::new(64, 1, 1, None).expect("valid parameters"), 2)
    }

    #[test]
    fn verifies_its_own_hashes_and_nothing_else() {
        let hasher = cheap();
        let phc = hasher.hash(b"s3cret").expect("hash");
        assert!(hasher.verify(b"s3cret", &phc));
        assert!(!hasher.verify(b"s3creT", &phc));
        assert!(!hasher.verify(b"", &phc));
        assert!(!hasher.verify(b"s3cret", "not a phc string"));
        assert!(!hasher.verify(b"s3cret", &phc.replace("argon2id", "scrypt")));
    }

    #[test]
    fn agrees_with_the_argon2_crate_both_ways() {
        let hasher = cheap();
        let ours = hasher.hash(b"k").expect("hash");
        let parsed = PasswordHash::new(&ours).expect("a PHC string");
        assert!(Argon2::default().verify_password(b"k", &parsed).is_ok());

        // Hashed elsewhere, at other parameters (argon2i, v=16): verified under its own.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x10,
            Params::new(256, 2, 2, None).expect("valid parameters"),
        );
        let theirs = password_hash::PasswordHasher::hash_password(&theirs, b"k", &salt)
            .expect("hash")
            .to_string();
        assert!(hasher.verify(b"k", &theirs));
        assert!(!hasher.verify(b"j", &theirs));
    }

    #[test]
    fn reuses_one_buffer_for_sequential_calls() {
        let hasher = cheap();
        let phc = hasher.hash(b"a").expect("hash");
        for _ in 0..5 {
            assert!(hasher.verify(b"a", &phc));
        }
        assert_eq!(hasher.pooled_buffers(), 1);
    }

    #[test]
    fn keeps_no_more_buffers_than_allowed_and_none_oversized() {
        let hasher = cheap();
        let phc = hasher.hash(b"a").expect("hash");
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| assert!(hasher.verify(b"a", &phc)));
            }
        });
        assert!(hasher.pooled_buffers() <= 2, "{}", hasher.pooled_buffers());

        let costly = Hasher::new(Params::new(1024, 1, 1, None).expect("valid parameters"), 2);
        let costly_phc = costly.hash(b"b").expect("hash");
        let before = hasher.pooled_buffers();
        assert!(hasher.verify(b"b", &costly_phc));
        assert!(
            hasher.pooled_buffers() < before,
            "the oversized buffer was dropped"
        );
    }
}
