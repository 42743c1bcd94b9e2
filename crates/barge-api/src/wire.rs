//! Parsing request bodies into typed inputs, with errors that name the member at fault, and
//! the small helpers every operation's validation shares.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use barge_core::limits::*;
use barge_core::model::Tags;

use crate::error::ApiError;

/// Parses a JSON body. An empty body counts as `{}` (botocore sends `{}` for empty inputs,
/// other clients may send nothing). Errors name the member: "priority: invalid type…".
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::client(format!("The request body is not valid JSON: {msg}"));
        }
        if let Some(rest) = msg.strip_prefix("missing field `") {
            let field = rest.trim_end_matches('`');
            let full = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return ApiError::client(format!("Missing required member {full}"));
        }
        if path == "." {
            ApiError::client(format!("Invalid request body: {msg}"))
        } else {
            ApiError::client(format!("Invalid value for {path}: {msg}"))
        }
    })
}

/// A required member that serde saw but that must not be empty.
pub fn non_empty<'a>(field: &str, v: &'a str) -> Result<&'a str, ApiError> {
    if v.is_empty() {
        Err(ApiError::client(format!("{field} must not be empty")))
    } else {
        Ok(v)
    }
}

/// AWS's resource names: 1–128 letters, digits, hyphens and underscores.
pub fn check_name(field: &str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() || v.chars().count() > NAME_CHARS_MAX {
        return Err(ApiError::client(format!(
            "{field} must be 1 to {NAME_CHARS_MAX} characters long, got {}",
            v.chars().count()
        )));
    }
    if let Some(bad) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(ApiError::client(format!(
            "{field} {v:?} contains {bad:?}; use only letters, numbers, hyphens (-) and underscores (_)"
        )));
    }
    Ok(())
}

/// A job name additionally starts with a letter or digit.
pub fn check_job_name(v: &str) -> Result<(), ApiError> {
    check_name("jobName", v)?;
    if !v.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ApiError::client(format!(
            "jobName {v:?} must start with a letter or a number"
        )));
    }
    Ok(())
}

pub fn check_tags(field: &str, tags: &Tags) -> Result<(), ApiError> {
    if tags.len() > TAGS_PER_RESOURCE_MAX {
        return Err(ApiError::client(format!(
            "{field} has {} tags; at most {TAGS_PER_RESOURCE_MAX} are allowed",
            tags.len()
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > TAG_KEY_CHARS_MAX {
            return Err(ApiError::client(format!(
                "{field}: tag key {k:?} must be 1 to {TAG_KEY_CHARS_MAX} characters"
            )));
        }
        if k.starts_with("aws:") {
            return Err(ApiError::client(format!(
                "{field}: tag key {k:?} uses the reserved prefix aws:"
            )));
        }
        if v.chars().count() > TAG_VALUE_CHARS_MAX {
            return Err(ApiError::client(format!(
                "{field}: the value of tag {k:?} is longer than {TAG_VALUE_CHARS_MAX} characters"
            )));
        }
    }
    Ok(())
}

pub fn check_enum<'a>(field: &str, v: &'a str, allowed: &[&str]) -> Result<&'a str, ApiError> {
    if allowed.contains(&v) {
        Ok(v)
    } else {
        Err(ApiError::client(format!(
            "{field} {v:?} is not one of {}",
            allowed.join(", ")
        )))
    }
}

pub fn check_range(field: &str, v: i64, min: i64, max: i64) -> Result<(), ApiError> {
    if v < min || v > max {
        Err(ApiError::client(format!(
            "{field} must be between {min} and {max}, got {v}"
        )))
    } else {
        Ok(())
    }
}

/// Page size: absent means `default`, otherwise 1..=max.
pub fn page_size(
    field: &str,
    v: Option<i64>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match v {
        None => Ok(default),
        Some(n) if n >= 1 && n as u64 <= max as u64 => Ok(n as usize),
        Some(n) => Err(ApiError::client(format!(
            "{field} must be between 1 and {max}, got {n}"
        ))),
    }
}

/// Opaque pagination tokens: base64 of a position the operation understands.
pub fn encode_token(position: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(position)
}

pub fn decode_token(token: &Option<String>) -> Result<Option<String>, ApiError> {
    use base64::Engine;
    match token {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| ApiError::client("nextToken is not a token this operation returned")),
    }
}

/// Removes null members recursively, so absent optional members are omitted, as AWS does.
pub fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, compact(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(compact).collect()),
        other => other,
    }
}

/// Merges recorded extra members into a rendered object without overwriting Barge's own.
pub fn merge_other(target: &mut Value, other: &Map<String, Value>) {
    if let Value::Object(m) = target {
        for (k, v) in other {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
}
