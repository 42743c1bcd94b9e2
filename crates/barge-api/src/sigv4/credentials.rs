//! The aws CLI's shared credentials file (`~/.aws/credentials`), so that one file can serve
//! both Barge (`barge up --credentials-file`) and the clients that talk to it:
//!
//! ```ini
//! # comments start with # or ;
//! [default]
//! aws_access_key_id = AKIAEXAMPLE
//! aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
//!
//! [ci]
//! aws_access_key_id = AKIACIEXAMPLE
//! aws_secret_access_key = …
//! ```
//!
//! Read as the aws CLI reads it (Python's configparser): `key = value` or `key: value`, names
//! case-insensitive, comments only on lines of their own, indented lines continuing the value
//! above. Other settings (`region`, `aws_session_token`, …) are ignored. Parsing is pure: the
//! caller reads the file.

use std::fmt;

/// One profile that holds an access key.
#[derive(Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

const ACCESS_KEY_ID: &str = "aws_access_key_id";
const SECRET_ACCESS_KEY: &str = "aws_secret_access_key";

/// The profiles of a credentials file that hold an access key, in file order. Profiles with
/// neither key (say, only a role or SSO settings) are skipped; a profile with one of the two
/// is an error, as it is for the aws CLI ("partial credentials"). Errors name the line.
pub fn parse(text: &str) -> Result<Vec<Profile>, String> {
    struct Section {
        name: String,
        line: usize,
        access_key_id: Option<String>,
        secret_access_key: Option<String>,
    }
    let mut sections: Vec<Section> = Vec::new();
    // The option the last key line set, while indented lines may still continue it.
    let mut continuing: Option<&'static str> = None;
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) && continuing.is_some() {
            if let Some(ours) = continuing.filter(|k| !k.is_empty()) {
                return Err(format!(
                    "line {line_no}: the value of {ours} continues on an indented line; write the key on one line"
                ));
            }
            continue;
        }
        if let Some(inner) = line.strip_prefix('[') {
            let Some(name) = inner.strip_suffix(']').map(str::trim) else {
                return Err(format!(
                    "line {line_no}: a section header must be [name], got '{line}'"
                ));
            };
            if name.is_empty() {
                return Err(format!("line {line_no}: the section has no name"));
            }
            if let Some(earlier) = sections.iter().find(|s| s.name == name) {
                return Err(format!(
                    "line {line_no}: profile [{name}] appears twice (first on line {}); keep one",
                    earlier.line
                ));
            }
            sections.push(Section {
                name: name.to_string(),
                line: line_no,
                access_key_id: None,
                secret_access_key: None,
            });
            continuing = None;
            continue;
        }
        let Some(split) = line.find(['=', ':']) else {
            return Err(format!(
                "line {line_no}: expected 'name = value' or a [profile] header, got '{line}'"
            ));
        };
        let key = line[..split].trim().to_ascii_lowercase();
        let value = line[split + 1..].trim();
        let Some(section) = sections.last_mut() else {
            return Err(format!(
                "line {line_no}: '{key}' comes before any [profile] header; put it under one, e.g. [default]"
            ));
        };
        let slot = match key.as_str() {
            ACCESS_KEY_ID => Some((&mut section.access_key_id, ACCESS_KEY_ID)),
            SECRET_ACCESS_KEY => Some((&mut section.secret_access_key, SECRET_ACCESS_KEY)),
            _ => None,
        };
        // "" marks a setting that is not ours: its continuation lines are skipped silently.
        continuing = Some(slot.as_ref().map_or("", |(_, k)| *k));
        if let Some((slot, name)) = slot {
            if value.is_empty() {
                return Err(format!(
                    "line {line_no}: {name} of profile [{}] is empty",
                    section.name
                ));
            }
            *slot = Some(value.to_string());
        }
    }
    let mut profiles = Vec::new();
    for s in sections {
        match (s.access_key_id, s.secret_access_key) {
            (Some(access_key_id), Some(secret_access_key)) => profiles.push(Profile {
                name: s.name,
                access_key_id,
                secret_access_key,
            }),
            (None, None) => {}
            (Some(_), None) => {
                return Err(format!(
                    "profile [{}] (line {}) has {ACCESS_KEY_ID} but no {SECRET_ACCESS_KEY}",
                    s.name, s.line
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "profile [{}] (line {}) has {SECRET_ACCESS_KEY} but no {ACCESS_KEY_ID}",
                    s.name, s.line
                ))
            }
        }
    }
    Ok(profiles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_profile_with_keys_and_skips_the_rest() {
        let text = "# Barge's keys\n\
                    [default]\n\
                    aws_access_key_id = AKIDONE\n\
                    AWS_Secret_Access_Key=secret/one+x:y\n\
                    region = eu-west-1\n\
                    \n\
                    ; a role profile has no keys of its own\n\
                    [role]\n\
                    role_arn = arn:aws:iam::1:role/r\n\
                    s3 =\n  max_concurrent_requests = 2\n\
                    [profile ci]\n\
                    aws_access_key_id: AKIDTWO\n\
                    aws_secret_access_key: two\n\
                    aws_session_token = ignored\n";
        let profiles = parse(text).unwrap();
        assert_eq!(
            profiles,
            vec![
                Profile {
                    name: "default".into(),
                    access_key_id: "AKIDONE".into(),
                    secret_access_key: "secret/one+x:y".into(),
                },
                Profile {
                    name: "profile ci".into(),
                    access_key_id: "AKIDTWO".into(),
                    secret_access_key: "two".into(),
                },
            ]
        );
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let cases = [
            (
                "aws_access_key_id = A\n",
                "line 1: 'aws_access_key_id' comes before any [profile]",
            ),
            ("[a\n", "line 1: a section header must be [name]"),
            ("[a]\njunk\n", "line 2: expected 'name = value'"),
            (
                "[a]\naws_access_key_id = A\n",
                "profile [a] (line 1) has aws_access_key_id but no aws_secret_access_key",
            ),
            (
                "[a]\naws_secret_access_key = S\n",
                "has aws_secret_access_key but no aws_access_key_id",
            ),
            (
                "[a]\naws_access_key_id =\naws_secret_access_key = S\n",
                "line 2: aws_access_key_id of profile [a] is empty",
            ),
            (
                "[a]\n[b]\n[a]\n",
                "line 3: profile [a] appears twice (first on line 1)",
            ),
            (
                "[a]\naws_access_key_id = A\n  more\n",
                "line 3: the value of aws_access_key_id continues",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn debug_never_shows_a_secret() {
        let p = &parse("[d]\naws_access_key_id=A\naws_secret_access_key=TOPSECRET\n").unwrap()[0];
        assert!(!format!("{p:?}").contains("TOPSECRET"));
    }
}
