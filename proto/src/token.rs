//! Project-scoped access tokens.
//!
//! The control plane holds an Ed25519 signing key and issues tokens that name
//! one project and an expiry. A runner holds only the matching public key: user
//! code running beside it can read everything the runner holds, and a public
//! key lets it forge nothing.
//!
//! Format: `cc1.<base64url(claims JSON)>.<base64url(signature)>`, the signature
//! covering the ASCII bytes `cc1.<base64url(claims JSON)>`.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

const PREFIX: &str = "cc1.";
/// Tokens longer than this are refused before any decoding.
const MAX_TOKEN_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The one project this token opens.
    pub project: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no access token was presented")]
    Missing,
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token's signature is not valid")]
    BadSignature,
    #[error("the access token expired")]
    Expired,
    #[error("the access token is for another project")]
    WrongProject,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("key must be 32 bytes, got {0}")]
    Length(usize),
    #[error("not a valid Ed25519 public key")]
    Invalid,
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// Issues tokens. Lives in the control plane only.
pub struct TokenIssuer {
    key: SigningKey,
}

impl TokenIssuer {
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads a key saved with [`TokenIssuer::secret_base64`].
    pub fn from_secret_base64(encoded: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(encoded.trim())?;
        let seed: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn secret_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier {
            key: self.key.verifying_key(),
        }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        // Claims are two plain fields: serialising them cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }
}

/// Checks tokens. Safe to hand to a runner: it holds a public key only.
#[derive(Clone, Debug)]
pub struct TokenVerifier {
    key: VerifyingKey,
}

impl TokenVerifier {
    pub fn from_public_base64(encoded: &str) -> Result<Self, KeyError> {
        let bytes = STANDARD.decode(encoded.trim())?;
        let raw: [u8; 32] = bytes.as_slice().try_into().map_err(|_| KeyError::Length(bytes.len()))?;
        Ok(Self {
            key: VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::Invalid)?,
        })
    }

    pub fn public_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }

    /// Accepts `token` only if it is signed by the control plane, names
    /// `project` and has not expired at `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, project: &str, now: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES || !token.starts_with(PREFIX) {
            return Err(TokenError::Malformed);
        }
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        let signature = Signature::from_slice(&signature).map_err(|_| TokenError::Malformed)?;
        self.key
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.project != project {
            return Err(TokenError::WrongProject);
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch, for [`TokenVerifier::verify`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(project: &str, exp: u64) -> Claims {
        Claims {
            project: project.into(),
            exp,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let issuer = TokenIssuer::generate().unwrap();
        let verifier = TokenVerifier::from_public_base64(&issuer.verifier().public_base64()).unwrap();
        let token = issuer.issue(&claims("alpha", 1000));
        assert_eq!(verifier.verify(&token, "alpha", 999), Ok(claims("alpha", 1000)));
        assert_eq!(verifier.verify(&token, "alpha", 1000), Err(TokenError::Expired));
        assert_eq!(verifier.verify(&token, "beta", 10), Err(TokenError::WrongProject));
        assert_eq!(verifier.verify("", "alpha", 10), Err(TokenError::Missing));
        assert_eq!(verifier.verify("garbage", "alpha", 10), Err(TokenError::Malformed));

        // Same claims, another key: forged.
        let forged = TokenIssuer::generate().unwrap().issue(&claims("alpha", 1000));
        assert_eq!(verifier.verify(&forged, "alpha", 10), Err(TokenError::BadSignature));

        // Claims edited after signing: forged.
        let (_, sig) = token.rsplit_once('.').unwrap();
        let edited = format!(
            "{PREFIX}{}.{sig}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("alpha", u64::MAX)).unwrap())
        );
        assert_eq!(verifier.verify(&edited, "alpha", 10), Err(TokenError::BadSignature));
    }

    #[test]
    fn secret_round_trips() {
        let issuer = TokenIssuer::generate().unwrap();
        let again = TokenIssuer::from_secret_base64(&issuer.secret_base64()).unwrap();
        assert_eq!(issuer.verifier().public_base64(), again.verifier().public_base64());
        assert!(TokenVerifier::from_public_base64("AAAA").is_err());
    }
}
