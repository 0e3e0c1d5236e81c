//! argon2id password hashing. Hashing is deliberately slow, so it runs on the blocking pool.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::ApiError;

/// Shortest accepted password.
pub const MIN_LEN: usize = 8;
/// Longest accepted password (argon2 is fine with more; this bounds the work per request).
pub const MAX_LEN: usize = 256;

/// Checks a new password's length.
pub fn validate(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(ApiError::invalid(
            "password",
            format!("password must have at least {MIN_LEN} characters"),
        ));
    }
    if password.len() > MAX_LEN {
        return Err(ApiError::invalid(
            "password",
            format!("password must have at most {MAX_LEN} bytes"),
        ));
    }
    Ok(())
}

/// Hashes a password (PHC string with a random salt).
pub async fn hash(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
}

/// Hashes a password on the current thread (CLI).
pub fn hash_blocking(password: &str) -> Result<String, ApiError> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| ApiError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Whether `password` matches the stored hash. A corrupt hash never matches.
pub async fn verify(hash: String, password: String) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// A hash to verify against when the user does not exist, so that unknown emails take as long
/// as wrong passwords (no account enumeration by timing).
pub fn decoy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$wQ2mG7FJp3lsSP2dOdYxoAoqn3f0oXyrx+1nGnhW0d4"
}
