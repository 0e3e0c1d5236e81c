//! Bearer API tokens for mobile apps: `ls_` + 32 random bytes (base64url). Only the SHA-256
//! of a token is stored; the secret is shown once when created.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Prefix that makes tokens recognisable in logs and secret scanners.
pub const PREFIX: &str = "ls_";

/// A new token: (the secret to show once, the hash to store).
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash(&secret);
    (secret, hash)
}

/// The stored form of a token.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}
