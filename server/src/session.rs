//! Browser sessions: what the API token becomes once a browser has shown it.
//!
//! The page trades the token (from the URL the server prints, or pasted)
//! for a cookie that is host-only, HttpOnly and SameSite=Strict, so neither
//! script on the page nor any other site can read or send it. The cookie is
//! a MAC keyed by the API token over an expiry and a nonce: no session table
//! to lose in a restart, valid across replicas that share the token, and
//! every session ends when the token is replaced.
//!
//! Cookie-authenticated calls that change state must also carry a CSRF
//! value derived from the cookie (the page reads it from `GET /api/session`):
//! a cross-site form or a preview page can make the browser send the cookie
//! (SameSite does not stop same-site requests) but cannot read or set that
//! header.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const COOKIE_NAME: &str = "cloudcode_session";
/// How long a browser stays logged in without showing the token again.
pub const LIFETIME_SECS: u64 = 30 * 24 * 3600;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Sessions {
    key: Vec<u8>,
    secure: bool,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").field("secure", &self.secure).finish()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Sessions {
    /// `secure` adds the `Secure` attribute (HTTPS deployments).
    pub fn new(api_token: &str, secure: bool) -> Self {
        Self {
            key: api_token.as_bytes().to_vec(),
            secure,
        }
    }

    fn mac(&self, purpose: &str, text: &str) -> String {
        // HMAC accepts keys of any length.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(purpose.as_bytes());
        mac.update(b"\0");
        mac.update(text.as_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// A new session's cookie value.
    pub fn issue(&self) -> Result<String, getrandom::Error> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)?;
        let body = format!("s1.{}.{}", now_secs() + LIFETIME_SECS, URL_SAFE_NO_PAD.encode(nonce));
        let mac = self.mac("session", &body);
        Ok(format!("{body}.{mac}"))
    }

    /// True for a cookie value this server issued that has not expired.
    pub fn verify(&self, value: &str) -> bool {
        let Some((body, mac)) = value.rsplit_once('.') else {
            return false;
        };
        let mut parts = body.split('.');
        let (Some("s1"), Some(exp), Some(_nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let fresh = exp.parse::<u64>().is_ok_and(|exp| exp > now_secs());
        fresh && constant_time_eq(self.mac("session", body).as_bytes(), mac.as_bytes())
    }

    /// The CSRF value that goes with a session.
    pub fn csrf_for(&self, session: &str) -> String {
        self.mac("csrf", session)
    }

    pub fn csrf_matches(&self, session: &str, presented: &str) -> bool {
        constant_time_eq(self.csrf_for(session).as_bytes(), presented.as_bytes())
    }

    pub fn set_cookie(&self, value: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE_NAME}={value}; Path=/; Max-Age={LIFETIME_SECS}; HttpOnly; SameSite=Strict{secure}")
    }

    pub fn clear_cookie(&self) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
    }
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn from_cookie_header(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_valid_only_under_the_token_that_issued_it() {
        let sessions = Sessions::new("token-a", false);
        let cookie = sessions.issue().unwrap();
        assert!(sessions.verify(&cookie));
        assert!(!Sessions::new("token-b", false).verify(&cookie));
        let mut forged = cookie.clone();
        forged.replace_range(3..4, if &cookie[3..4] == "9" { "8" } else { "9" });
        assert!(!sessions.verify(&forged));
        assert!(!sessions.verify(""));
        assert!(!sessions.verify("s1.1.x.y"));
    }

    #[test]
    fn an_expired_session_is_refused() {
        let sessions = Sessions::new("t", false);
        let body = "s1.1000.bm9uY2U";
        let cookie = format!("{body}.{}", sessions.mac("session", body));
        assert!(!sessions.verify(&cookie));
    }

    #[test]
    fn csrf_values_belong_to_one_session() {
        let sessions = Sessions::new("t", false);
        let (a, b) = (sessions.issue().unwrap(), sessions.issue().unwrap());
        assert!(sessions.csrf_matches(&a, &sessions.csrf_for(&a)));
        assert!(!sessions.csrf_matches(&b, &sessions.csrf_for(&a)));
        // The CSRF value is not the session itself.
        assert_ne!(sessions.csrf_for(&a), a);
    }

    #[test]
    fn cookies_are_host_only_http_only_and_strict() {
        let sessions = Sessions::new("t", true);
        let set = sessions.set_cookie("v");
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"));
        assert!(!set.to_ascii_lowercase().contains("domain="));
        assert_eq!(from_cookie_header("a=1; cloudcode_session=v; b=2"), Some("v"));
        assert_eq!(from_cookie_header("xcloudcode_session=v"), None);
    }
}
