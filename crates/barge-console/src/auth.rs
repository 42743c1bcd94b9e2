//! Who may use the console. When the server requires signatures (it has access keys), a person
//! signs in once with an access key id and its secret, checked against the server's keys, and
//! gets a session cookie: HttpOnly, SameSite=Strict, expiring, HMAC-signed with a secret made
//! at boot (so a restart signs everyone out, and nothing about sessions is stored). Without
//! keys (loopback only) the console is open, like the API.
//!
//! Every visitor holds a session, signed in or not, because every form is also protected
//! against cross-site requests by a token derived from the session (besides SameSite): a
//! page on another site can neither read the token nor make the browser send the cookie.

use std::sync::Arc;

use barge_api::sigv4::AccessKeys;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::limits::SESSION_MS;

pub const COOKIE: &str = "barge_console";

pub struct Auth {
    keys: Arc<AccessKeys>,
    /// Signs session cookies and CSRF tokens; made at boot, never stored.
    secret: [u8; 32],
    /// Cookies carry `Secure` when the server speaks HTTPS.
    secure: bool,
}

/// A visitor's session: the access key id it signed in with (empty: not signed in) and the
/// token its forms must carry.
#[derive(Clone, Debug)]
pub struct Session {
    pub key_id: String,
    pub csrf: String,
}

impl Auth {
    pub fn new(keys: Arc<AccessKeys>, secure: bool) -> Auth {
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Auth {
            keys,
            secret,
            secure,
        }
    }

    /// True when people must sign in.
    pub fn required(&self) -> bool {
        !self.keys.is_empty()
    }

    fn mac(&self, purpose: &str, payload: &str) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(b"|");
        mac.update(payload.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn session_of(&self, payload: &str, key_id: String) -> Session {
        Session {
            key_id,
            csrf: self.mac("csrf", payload),
        }
    }

    /// The session in the request's cookies, if it is one this server signed and it has not
    /// expired.
    pub fn session(&self, cookie_header: Option<&str>, now_ms: i64) -> Option<Session> {
        let value = cookie_header?
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == COOKIE)?
            .1;
        let (payload, sig) = value.rsplit_once('.')?;
        if !equal(self.mac("session", payload).as_bytes(), sig.as_bytes()) {
            return None;
        }
        let mut parts = payload.splitn(3, '.');
        let expires: i64 = parts.next()?.parse().ok()?;
        let key_hex = parts.next()?;
        if expires <= now_ms {
            return None;
        }
        let key_id = String::from_utf8(hex::decode(key_hex).ok()?).ok()?;
        Some(self.session_of(payload, key_id))
    }

    /// A new session for `key_id` (empty: not signed in) and its Set-Cookie header value.
    pub fn start(&self, key_id: &str, now_ms: i64) -> (Session, String) {
        let expires = now_ms.saturating_add(SESSION_MS);
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let payload = format!("{expires}.{}.{nonce}", hex::encode(key_id));
        let cookie = format!(
            "{COOKIE}={payload}.{}; Path=/console; Max-Age={}; HttpOnly; SameSite=Strict{}",
            self.mac("session", &payload),
            SESSION_MS / 1000,
            if self.secure { "; Secure" } else { "" }
        );
        (self.session_of(&payload, key_id.to_string()), cookie)
    }

    /// Whether this session may use the console.
    pub fn admits(&self, session: &Session) -> bool {
        !self.required()
            || (!session.key_id.is_empty() && self.keys.ids().any(|id| id == session.key_id))
    }

    /// Whether a form's token belongs to this session.
    pub fn csrf_ok(&self, session: &Session, token: Option<&str>) -> bool {
        token.is_some_and(|t| equal(t.as_bytes(), session.csrf.as_bytes()))
    }

    /// Checks an access key id and secret against the server's keys.
    pub fn sign_in(&self, key_id: &str, secret: &str) -> bool {
        self.keys.matches(key_id, secret)
    }
}

/// Compares without stopping at the first difference, so timing tells nothing of where.
fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed() -> Auth {
        let mut keys = AccessKeys::default();
        keys.insert("AKID", "secret").unwrap();
        Auth::new(Arc::new(keys), false)
    }

    fn cookie_value(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_string()
    }

    #[test]
    fn sessions_are_signed_expiring_and_bound_to_a_key() {
        let auth = keyed();
        assert!(auth.required());
        assert!(auth.sign_in("AKID", "secret"));
        assert!(!auth.sign_in("AKID", "wrong"));
        assert!(!auth.sign_in("OTHER", "secret"));
        let (s, set) = auth.start("AKID", 1_000);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        let cookie = cookie_value(&set);
        let back = auth
            .session(Some(&format!("x=1; {cookie}")), 2_000)
            .unwrap();
        assert_eq!(back.key_id, "AKID");
        assert_eq!(back.csrf, s.csrf);
        assert!(auth.admits(&back));
        assert!(auth.csrf_ok(&back, Some(&s.csrf)));
        assert!(!auth.csrf_ok(&back, Some("00")));
        assert!(!auth.csrf_ok(&back, None));
        // Expired, tampered, or signed by another boot: no session.
        assert!(auth.session(Some(&cookie), 1_000 + SESSION_MS).is_none());
        let forged = cookie.replace(&hex::encode("AKID"), &hex::encode("ROOT"));
        assert!(auth.session(Some(&forged), 2_000).is_none());
        assert!(keyed().session(Some(&cookie), 2_000).is_none());
        // A session that never signed in is not admitted when keys are on.
        let (anon, _) = auth.start("", 1_000);
        assert!(!auth.admits(&anon));
    }

    #[test]
    fn without_keys_everyone_is_admitted() {
        let auth = Auth::new(Arc::new(AccessKeys::default()), true);
        let (anon, set) = auth.start("", 0);
        assert!(!auth.required());
        assert!(auth.admits(&anon));
        assert!(set.contains("; Secure"));
        assert!(!auth.sign_in("", ""));
    }
}
