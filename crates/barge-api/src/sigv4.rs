//! AWS Signature Version 4 (`AWS4-HMAC-SHA256` in the Authorization header): verifying a
//! request against the access keys Barge accepts, and signing one (`barge why`). Pure: the
//! request, the keys and the time are arguments; nothing here reads a clock, a file or a socket.
//!
//! The canonical request is the one AWS documents, computed as botocore and the Rust SDK
//! compute it for every service but S3:
//!
//! - the canonical URI is the path *as received* (already percent-encoded once by the client),
//!   with dot segments and empty segments removed, percent-encoded a second time, so that
//!   `/v1/tags/arn%3Aaws…` signs as `/v1/tags/arn%253Aaws…`;
//! - the canonical query is every `name=value` pair decoded and re-encoded with only the
//!   unreserved characters left bare, sorted by name, then value;
//! - each signed header is `name:value` with the values of every occurrence trimmed, runs of
//!   spaces collapsed, and joined with commas;
//! - the payload hash is SHA-256 of the body (these services send no x-amz-content-sha256).
//!
//! Session tokens (`X-Amz-Security-Token`) are accepted when signed, and otherwise ignored:
//! Barge has long-term access keys only, so a token grants nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use barge_core::limits::{SIGV4_CLOCK_SKEW_MS, SIGV4_SIGNED_HEADERS_MAX};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::ApiError;

pub mod credentials;
#[cfg(test)]
mod tests;

/// The one signing algorithm of SigV4 (SigV4a's ECDSA variant is not supported).
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The last element of every credential scope.
const TERMINATOR: &str = "aws4_request";
/// `yyyymmddThhmmssZ`.
const AMZ_DATE_LEN: usize = 16;

/// A request as it came on the wire, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// `GET`, `POST`, … as sent.
    pub method: &'a str,
    /// The path exactly as received, still percent-encoded (`/v1/tags/arn%3Aaws…`).
    pub path: &'a str,
    /// The query exactly as received, without the `?`; empty when there is none.
    pub query: &'a str,
    /// Every header as received (a name may repeat). Names are matched case-insensitively.
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// The access keys whose signatures Barge accepts: access key id → secret access key.
#[derive(Clone, Default)]
pub struct AccessKeys {
    secrets: BTreeMap<String, String>,
}

impl AccessKeys {
    /// Adds a key. The id is one element of the credential scope, so it may not hold `/` or
    /// whitespace; the same id twice must come with the same secret.
    pub fn insert(&mut self, access_key_id: &str, secret_access_key: &str) -> Result<(), String> {
        if access_key_id.is_empty()
            || access_key_id
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "access key id '{access_key_id}' is not usable: it must be non-empty, without '/', spaces or control characters"
            ));
        }
        if secret_access_key.is_empty() {
            return Err(format!(
                "access key id '{access_key_id}' has an empty secret access key"
            ));
        }
        match self.secrets.get(access_key_id) {
            Some(existing) if existing != secret_access_key => Err(format!(
                "access key id '{access_key_id}' is configured twice with different secrets; keep one"
            )),
            _ => {
                self.secrets
                    .insert(access_key_id.to_string(), secret_access_key.to_string());
                Ok(())
            }
        }
    }
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
    pub fn len(&self) -> usize {
        self.secrets.len()
    }
    /// Whether `secret_access_key` is the secret of `access_key_id` (the console's sign-in).
    /// The comparison takes the same time wherever the secrets differ.
    pub fn matches(&self, access_key_id: &str, secret_access_key: &str) -> bool {
        let Some(secret) = self.secrets.get(access_key_id) else {
            return false;
        };
        let (a, b) = (secret.as_bytes(), secret_access_key.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
    /// The access key ids, sorted (never the secrets).
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }
}

/// Never prints a secret: configurations holding keys derive Debug.
impl fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeys")
            .field("ids", &self.secrets.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What a verified request proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub access_key_id: String,
}

/// Verifies `request`'s SigV4 signature: one of `keys`, scoped to `region` and `service`, with
/// an X-Amz-Date within `SIGV4_CLOCK_SKEW_MS` of `now_ms`. The errors are AWS's codes with
/// AWS's wording, followed by what to change.
pub fn verify(
    request: &Request<'_>,
    keys: &AccessKeys,
    region: &str,
    service: &str,
    now_ms: i64,
) -> Result<Verified, ApiError> {
    let authorization = match header_values(request.headers, "authorization").as_slice() {
        [] => {
            return Err(ApiError::missing_authentication_token(
                "This Barge accepts only requests signed with AWS Signature Version 4 by one of its access keys: give your client one (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the aws CLI and SDKs).",
            ))
        }
        [one] => String::from_utf8_lossy(one).into_owned(),
        _ => {
            return Err(ApiError::incomplete_signature(
                "The request has more than one Authorization header; send exactly one.",
            ))
        }
    };
    let amz_date = header_values(request.headers, "x-amz-date")
        .first()
        .map(|v| String::from_utf8_lossy(v).trim().to_string());
    let auth = parse_authorization(&authorization, amz_date.is_some())?;
    let amz_date = amz_date.unwrap_or_default();
    let Some(request_s) = parse_amz_date(&amz_date) else {
        return Err(ApiError::incomplete_signature(format!(
            "Date must be in ISO-8601 'basic format'. Got '{amz_date}'. X-Amz-Date is written yyyyMMdd'T'HHmmss'Z' in UTC, e.g. 20150830T123600Z."
        )));
    };
    check_clock(&amz_date, request_s, now_ms)?;

    let scope: Vec<&str> = auth.credential.split('/').collect();
    let [access_key_id, date, scope_region, scope_service, terminator] = scope[..] else {
        return Err(ApiError::incomplete_signature(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{}'",
            auth.credential
        )));
    };
    if terminator != TERMINATOR {
        return Err(ApiError::invalid_signature(format!(
            "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
        )));
    }
    if date != &amz_date[..8] {
        return Err(ApiError::invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{date}' != '{}', from '{amz_date}'.",
            &amz_date[..8]
        )));
    }
    if scope_region != region {
        return Err(ApiError::invalid_signature(format!(
            "Credential should be scoped to a valid region, not '{scope_region}'. This Barge serves region '{region}' (barge up --region): sign with that region (AWS_DEFAULT_REGION, --region)."
        )));
    }
    if scope_service != service {
        return Err(ApiError::invalid_signature(format!(
            "Credential should be scoped to correct service: '{service}'. The request was signed for '{scope_service}'."
        )));
    }
    let signed_headers: Vec<&str> = auth.signed_headers.split(';').collect();
    if signed_headers.iter().any(|h| h.is_empty()) {
        return Err(ApiError::incomplete_signature(format!(
            "SignedHeaders '{}' has an empty header name; list names separated by ';'.",
            auth.signed_headers
        )));
    }
    if signed_headers.len() > SIGV4_SIGNED_HEADERS_MAX {
        return Err(ApiError::incomplete_signature(format!(
            "SignedHeaders names {} headers; Barge verifies at most {SIGV4_SIGNED_HEADERS_MAX}.",
            signed_headers.len()
        )));
    }
    let mut seen = BTreeSet::new();
    if let Some(twice) = signed_headers
        .iter()
        .find(|h| !seen.insert(h.to_ascii_lowercase()))
    {
        return Err(ApiError::incomplete_signature(format!(
            "SignedHeaders names '{twice}' more than once; list each header once."
        )));
    }
    if !signed_headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("host"))
    {
        return Err(ApiError::incomplete_signature(format!(
            "'Host' must be a 'SignedHeader' in the AWS Authorization (SignedHeaders is '{}').",
            auth.signed_headers
        )));
    }
    let Some(secret) = keys.secrets.get(access_key_id) else {
        return Err(ApiError::unrecognized_client(&format!(
            "Access key id '{access_key_id}' is not one of this Barge's access keys."
        )));
    };

    let canonical = canonical_request(request, auth.signed_headers, &signed_headers);
    let scope = format!("{date}/{region}/{service}/{TERMINATOR}");
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let key = signing_key(secret, date, region, service);
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(to_sign.as_bytes());
    // Decoding the client's hex first lets the comparison be the MAC's own constant-time one.
    let provided = hex::decode(auth.signature).unwrap_or_default();
    if mac.verify_slice(&provided).is_err() {
        return Err(ApiError::invalid_signature(format!(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\nThe Canonical String for this request should have been\n'{}'\n\nThe String-to-Sign should have been\n'{to_sign}'\n",
            String::from_utf8_lossy(&canonical)
        )));
    }
    Ok(Verified {
        access_key_id: access_key_id.to_string(),
    })
}

/// A key to sign with.
#[derive(Clone, Copy)]
pub struct SigningKey<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// Signs `request` at `now_ms`: every header it has (which must include `host`) and the
/// X-Amz-Date this adds. Returns the headers to send besides the request's own:
/// `x-amz-date` and `authorization`.
pub fn sign(request: &Request<'_>, key: &SigningKey<'_>, now_ms: i64) -> Vec<(String, String)> {
    let amz_date = format_amz_date(now_ms.div_euclid(1000));
    let mut headers: Vec<(&str, &[u8])> = request.headers.to_vec();
    headers.push(("x-amz-date", amz_date.as_bytes()));
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let signed_headers = names.join(";");
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let with_date = Request {
        headers: &headers,
        ..*request
    };
    let canonical = canonical_request(&with_date, &signed_headers, &names);
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/{}/{TERMINATOR}", key.region, key.service);
    let to_sign = string_to_sign(&amz_date, &scope, &canonical);
    let signature = hex::encode(hmac_sha256(
        &signing_key(key.secret_access_key, date, key.region, key.service),
        to_sign.as_bytes(),
    ));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        key.access_key_id
    );
    vec![
        ("x-amz-date".to_string(), amz_date),
        ("authorization".to_string(), authorization),
    ]
}

/// The three parts of `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str, has_date: bool) -> Result<Authorization<'_>, ApiError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme != ALGORITHM {
        return Err(ApiError::incomplete_signature(format!(
            "Authorization header uses '{scheme}', which this Barge does not accept: sign requests with AWS Signature Version 4 ('{ALGORITHM} Credential=…, SignedHeaders=…, Signature=…')."
        )));
    }
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, v)) = part.split_once('=') else {
            return Err(ApiError::incomplete_signature(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: '{value}'."
            )));
        };
        let v = v.trim();
        match name.trim() {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed_headers = Some(v),
            "Signature" => signature = Some(v),
            // AWS ignores parameters it does not know; so does Barge.
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for (name, found) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if found.is_none_or(str::is_empty) {
            missing.push(format!("Authorization header requires '{name}' parameter."));
        }
    }
    if !has_date {
        // AWS also takes a Date header; every SDK sends X-Amz-Date, and Barge takes only it.
        missing.push("Authorization header requires existence of an 'X-Amz-Date' header.".into());
    }
    match (credential, signed_headers, signature) {
        (Some(credential), Some(signed_headers), Some(signature)) if missing.is_empty() => {
            Ok(Authorization {
                credential,
                signed_headers,
                signature,
            })
        }
        _ => Err(ApiError::incomplete_signature(format!(
            "{} Authorization={value}",
            missing.join(" ")
        ))),
    }
}

/// AWS's skew rule and its wording: the stamp must lie within SIGV4_CLOCK_SKEW_MS of now.
fn check_clock(amz_date: &str, request_s: i64, now_ms: i64) -> Result<(), ApiError> {
    let now_s = now_ms.div_euclid(1000);
    let skew_s = SIGV4_CLOCK_SKEW_MS / 1000;
    let skew_min = SIGV4_CLOCK_SKEW_MS / 60_000;
    let now = format_amz_date(now_s);
    if request_s < now_s - skew_s {
        return Err(ApiError::invalid_signature(format!(
            "Signature expired: {amz_date} is now earlier than {} ({now} - {skew_min} min.) Check the clock of the machine that signed the request.",
            format_amz_date(now_s - skew_s)
        )));
    }
    if request_s > now_s + skew_s {
        return Err(ApiError::invalid_signature(format!(
            "Signature not yet current: {amz_date} is still later than {} ({now} + {skew_min} min.) Check the clock of the machine that signed the request.",
            format_amz_date(now_s + skew_s)
        )));
    }
    Ok(())
}

/// The raw values of every header named `name` (case-insensitively), in order.
fn header_values<'a>(headers: &[(&str, &'a [u8])], name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect()
}

/// The canonical request, as bytes: header values need not be UTF-8.
fn canonical_request(request: &Request<'_>, signed_headers: &str, names: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + request.path.len() + request.query.len());
    out.extend_from_slice(request.method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(request.path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(request.query).as_bytes());
    out.push(b'\n');
    for name in names {
        out.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        out.push(b':');
        let values = header_values(request.headers, name);
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(&mut out, value);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(hex::encode(Sha256::digest(request.body)).as_bytes());
    out
}

/// A header value trimmed, with each run of spaces and tabs inside it made one space.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let mut words = value.split(blank).filter(|w| !w.is_empty()).peekable();
    while let Some(word) = words.next() {
        out.extend_from_slice(word);
        if words.peek().is_some() {
            out.push(b' ');
        }
    }
}

/// The path with dot segments and empty segments removed (as clients normalise it before
/// signing), percent-encoded once more.
fn canonical_uri(raw_path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut path = format!("/{}", segments.join("/"));
    if raw_path.ends_with('/') && !segments.is_empty() {
        path.push('/');
    }
    uri_encode(path.as_bytes(), false)
}

/// Every `name=value` pair decoded, re-encoded strictly, sorted by name then value.
fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(name), true),
                uri_encode(&percent_decode(value), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// SigV4's encoding: unreserved characters stay, every other byte becomes `%XX` (uppercase
/// hex); `/` too when `encode_slash`.
fn uri_encode(bytes: &[u8], encode_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if !encode_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `%XX` sequences decoded; anything else (a lone `%`, `+`) kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &[u8]) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request))
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .expect("HMAC-SHA256 takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The signing key: HMAC chained over the date, region, service and terminator, starting
/// from "AWS4" + the secret.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, TERMINATOR.as_bytes())
}

/// `yyyymmddThhmmssZ` (UTC) → seconds since the epoch; None unless exactly that form and a
/// real time.
fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // ASCII first: the slicing below must never split a character of a hostile header.
    if !s.is_ascii() || b.len() != AMZ_DATE_LEN || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = &s[range];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (digits(0..4)?, digits(4..6)?, digits(6..8)?);
    let (hour, minute, second) = (digits(9..11)?, digits(11..13)?, digits(13..15)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    Some(
        barge_core::time::days_from_civil(year, month, day) * 86_400
            + hour * 3_600
            + minute * 60
            + second,
    )
}

/// Seconds since the epoch → `yyyymmddThhmmssZ`.
fn format_amz_date(epoch_s: i64) -> String {
    let t = barge_core::time::UtcTime::from_seconds(epoch_s);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
