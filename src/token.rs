//! API tokens: generation, parsing and checksum.
//!
//! `ik_live_<key id>_<secret><checksum>` (data plane) or `ik_sdk_<key id>_<secret><checksum>`
//! (control plane). The key id is public and indexes the stored row; the secret is 43 base62
//! characters of OS randomness (256 bits); the checksum is the CRC32 of everything before it in
//! 6 base62 characters, so typos and junk are rejected before any storage lookup.

use std::fmt;
use zeroize::Zeroizing;

use rand::distr::Alphanumeric;
use rand::rngs::OsRng;
use rand::{Rng as _, TryRngCore as _};
use sha2::{Digest, Sha256};

use crate::model::Plane;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// 12 base62 characters: ~71 bits, enough that ids never collide in practice.
pub const KEY_ID_LEN: usize = 12;
/// 43 base62 characters carry 256.03 bits.
pub const SECRET_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;
const DATA_PREFIX: &str = "ik_live_";
const CONTROL_PREFIX: &str = "ik_sdk_";
/// Longest well-formed token; anything longer is junk and is not even scanned.
pub const MAX_TOKEN_LEN: usize = DATA_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN;

/// Why a presented string is not a token. Deliberately carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token has no ik_live_ or ik_sdk_ prefix")]
    Prefix,
    #[error("token has the wrong length or characters")]
    Shape,
    #[error("token checksum does not match")]
    Checksum,
}

/// A syntactically valid token borrowed from the request. Its `Debug` never shows the secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token<'a> {
    pub plane: Plane,
    pub key_id: &'a str,
    secret: &'a str,
    whole: &'a str,
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("plane", &self.plane)
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl<'a> Token<'a> {
    /// Parses and checksums a presented token without touching storage.
    pub fn parse(presented: &'a str) -> Result<Self, TokenError> {
        if presented.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Shape);
        }
        let (plane, rest) = if let Some(rest) = presented.strip_prefix(DATA_PREFIX) {
            (Plane::Data, rest)
        } else if let Some(rest) = presented.strip_prefix(CONTROL_PREFIX) {
            (Plane::Control, rest)
        } else {
            return Err(TokenError::Prefix);
        };
        if rest.len() != KEY_ID_LEN + 1 + SECRET_LEN + CHECKSUM_LEN
            || rest.as_bytes()[KEY_ID_LEN] != b'_'
        {
            return Err(TokenError::Shape);
        }
        let (key_id, tail) = (&rest[..KEY_ID_LEN], &rest[KEY_ID_LEN + 1..]);
        if !is_base62(key_id) || !is_base62(tail) {
            return Err(TokenError::Shape);
        }
        let (secret, checksum) = tail.split_at(SECRET_LEN);
        let body = &presented[..presented.len() - CHECKSUM_LEN];
        if checksum.as_bytes() != encode_checksum(body).as_slice() {
            return Err(TokenError::Checksum);
        }
        Ok(Token {
            plane,
            key_id,
            secret,
            whole: presented,
        })
    }

    /// The secret part, to verify against the stored argon2id hash.
    pub fn secret(&self) -> &'a str {
        self.secret
    }

    /// SHA-256 of the whole token: the verification cache's key. The raw token is never kept.
    pub fn cache_key(&self) -> [u8; 32] {
        Sha256::digest(self.whole.as_bytes()).into()
    }
}

/// A freshly minted token: shown once to its creator, then only its hash survives.
pub struct NewToken {
    /// The whole token, shown to its owner once (it leaves in the admin API's answer).
    pub token: String,
    /// The secret part, only ever hashed: wiped from memory when dropped.
    pub secret: Zeroizing<String>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewToken(<redacted>)")
    }
}

/// A new random public key id.
pub fn generate_key_id() -> String {
    random_base62(KEY_ID_LEN)
}

/// Mints a token for `key_id` with a fresh secret from the operating system's CSPRNG.
pub fn generate(plane: Plane, key_id: &str) -> NewToken {
    let secret = random_base62(SECRET_LEN);
    let prefix = match plane {
        Plane::Data => DATA_PREFIX,
        Plane::Control => CONTROL_PREFIX,
    };
    let mut token = format!("{prefix}{key_id}_{secret}");
    let checksum = encode_checksum(&token);
    token.push_str(std::str::from_utf8(&checksum).unwrap_or_default());
    NewToken {
        token,
        secret: Zeroizing::new(secret),
    }
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn encode_checksum(body: &str) -> [u8; CHECKSUM_LEN] {
    let mut value = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// Uniform base62 from the operating system's CSPRNG: rand's `Alphanumeric` draws each
/// character uniformly from the 62 (by rejection, so without modulo bias). Panics if the
/// operating system's random source fails: no token is better than a guessable one.
fn random_base62(len: usize) -> String {
    OsRng
        .unwrap_err()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_base62_is_base62_of_the_asked_length_and_uniform() {
        assert_eq!(random_base62(0), "");
        let text = random_base62(62 * 1_000);
        assert_eq!(text.len(), 62 * 1_000);
        assert!(is_base62(&text));
        // Each of the 62 characters ~1000 times (σ ≈ 31): a biased or truncated alphabet shows.
        for &c in BASE62 {
            let n = text.bytes().filter(|&b| b == c).count();
            assert!((700..1_300).contains(&n), "{} drawn {n} times", c as char);
        }
        assert_ne!(random_base62(SECRET_LEN), random_base62(SECRET_LEN));
    }

    fn mint(plane: Plane) -> String {
        generate(plane, &generate_key_id()).token
    }

    #[test]
    fn generated_tokens_parse_back() {
        for plane in [Plane::Data, Plane::Control] {
            let token = mint(plane);
            let parsed = Token::parse(&token).expect("fresh token parses");
            assert_eq!(parsed.plane, plane);
            assert_eq!(parsed.key_id.len(), KEY_ID_LEN);
            assert_eq!(parsed.secret().len(), SECRET_LEN);
            assert!(token.starts_with(if plane == Plane::Data {
                "ik_live_"
            } else {
                "ik_sdk_"
            }));
        }
    }

    #[test]
    fn every_single_character_typo_is_caught() {
        let token = mint(Plane::Data);
        let start = DATA_PREFIX.len();
        for i in start..token.len() {
            if token.as_bytes()[i] == b'_' {
                continue;
            }
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert!(Token::parse(&typo).is_err(), "typo at {i} accepted");
        }
    }

    #[test]
    fn junk_is_rejected_with_the_right_reason() {
        let token = mint(Plane::Control);
        assert_eq!(Token::parse(""), Err(TokenError::Prefix));
        assert_eq!(Token::parse("sk-proj-abc"), Err(TokenError::Prefix));
        assert_eq!(Token::parse("ik_live_"), Err(TokenError::Shape));
        assert_eq!(
            Token::parse(&token[..token.len() - 1]),
            Err(TokenError::Shape)
        );
        assert_eq!(Token::parse(&format!("{token}x")), Err(TokenError::Shape));
        assert_eq!(
            Token::parse(&"ik_live_".repeat(1000)),
            Err(TokenError::Shape)
        );
        let swapped = token.replacen("ik_sdk_", "ik_live", 1);
        assert!(Token::parse(&swapped).is_err());
        let non_ascii = format!("ik_live_{}", "é".repeat(31));
        assert!(Token::parse(&non_ascii).is_err());
        let underscore_moved = format!("ik_live_{}", &token[7..].replace('_', "0"));
        assert!(Token::parse(&underscore_moved).is_err());
    }

    #[test]
    fn plane_prefix_is_covered_by_the_checksum() {
        let token = mint(Plane::Control);
        let relabelled = token.replacen("ik_sdk_", "ik_live_", 1);
        assert_eq!(Token::parse(&relabelled), Err(TokenError::Checksum));
    }

    #[test]
    fn debug_output_never_contains_the_secret() {
        let token = mint(Plane::Data);
        let parsed = Token::parse(&token).unwrap();
        let shown = format!("{parsed:?}");
        assert!(!shown.contains(parsed.secret()));
        assert!(shown.contains(parsed.key_id));
    }

    #[test]
    fn secrets_are_distinct_and_use_the_whole_alphabet() {
        let mut seen = std::collections::HashSet::new();
        let mut chars = std::collections::HashSet::new();
        for _ in 0..200 {
            let t = generate(Plane::Data, "abcdefghijkl");
            chars.extend(t.secret.bytes());
            assert!(seen.insert(t.secret.to_string()));
        }
        assert_eq!(chars.len(), 62);
    }
}
