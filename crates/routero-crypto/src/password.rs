//! Passwords of break-glass local admins: Argon2id, with OWASP's parameters by default (19 MiB,
//! 2 passes, 1 lane), kept as a PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`, base64
//! without padding) that carries its own parameters, and compared in constant time.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use subtle::ConstantTimeEq;

use crate::{CryptoError, random_bytes};

/// Argon2id's cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl Default for PasswordCost {
    /// OWASP's recommendation: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            passes: 2,
            lanes: 1,
        }
    }
}

const HASH_LEN: usize = 32;

fn argon2(cost: PasswordCost) -> Result<Argon2<'static>, CryptoError> {
    let params = Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(HASH_LEN))
        .map_err(|e| CryptoError::InvalidKey(format!("argon2 parameters: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn derive(password: &str, salt: &[u8], cost: PasswordCost) -> Result<[u8; HASH_LEN], CryptoError> {
    let mut out = [0u8; HASH_LEN];
    argon2(cost)?
        .hash_password_into(password.as_bytes(), salt, &mut out)
        .map_err(|e| CryptoError::InvalidKey(format!("argon2: {e}")))?;
    Ok(out)
}

/// Hashes `password` under a fresh salt; the result names its own parameters.
pub fn hash_password(password: &str, cost: PasswordCost) -> Result<String, CryptoError> {
    let salt: [u8; 16] = random_bytes()?;
    let hash = derive(password, &salt, cost)?;
    Ok(format!(
        "$argon2id$v=19$m={},t={},p={}${}${}",
        cost.memory_kib,
        cost.passes,
        cost.lanes,
        STANDARD_NO_PAD.encode(salt),
        STANDARD_NO_PAD.encode(hash)
    ))
}

/// Whether `password` is the one `stored` was made from. A stored value that is not an
/// Argon2id PHC string of ours is an error, never a match.
pub fn verify_password(password: &str, stored: &str) -> Result<bool, CryptoError> {
    let malformed = || CryptoError::Malformed("password hash");
    let mut parts = stored.split('$');
    let (Some(""), Some("argon2id"), Some("v=19"), Some(params), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed());
    };
    let mut cost = PasswordCost::default();
    for pair in params.split(',') {
        let (name, value) = pair.split_once('=').ok_or_else(malformed)?;
        let value: u32 = value.parse().map_err(|_| malformed())?;
        match name {
            "m" => cost.memory_kib = value,
            "t" => cost.passes = value,
            "p" => cost.lanes = value,
            _ => return Err(malformed()),
        }
    }
    // A stored string asks for its own cost; one no configuration would choose is refused
    // rather than run (1 GiB, 64 passes, 16 lanes at most).
    if cost.memory_kib > 1024 * 1024 || cost.passes > 64 || cost.lanes > 16 {
        return Err(malformed());
    }
    let salt = STANDARD_NO_PAD.decode(salt).map_err(|_| malformed())?;
    let expected = STANDARD_NO_PAD.decode(hash).map_err(|_| malformed())?;
    let actual = derive(password, &salt, cost)?;
    Ok(bool::from(actual.as_slice().ct_eq(expected.as_slice())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: these tests are about the format, not the cost.
    const CHEAP: PasswordCost = PasswordCost {
        memory_kib: 64,
        passes: 1,
        lanes: 1,
    };

    #[test]
    fn verifies_only_the_password() {
        let stored = hash_password("correct horse", CHEAP).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(verify_password("correct horse", &stored).unwrap());
        assert!(!verify_password("correct horsE", &stored).unwrap());
        assert_ne!(
            stored,
            hash_password("correct horse", CHEAP).unwrap(),
            "salted"
        );
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        for bad in [
            "",
            "plain",
            "$argon2i$v=19$m=64,t=1,p=1$AAAA$AAAA",
            "$argon2id$v=19$m=64$x$y$z",
        ] {
            assert!(verify_password("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owasp_by_default() {
        let stored = hash_password("pw", PasswordCost::default()).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    }
}
