//! Form bodies and query strings (`application/x-www-form-urlencoded`), the command-line
//! splitting of a "command" field, and matching an API error message to the form field it
//! names.

use std::collections::BTreeMap;

use percent_encoding::percent_decode_str;

/// Decoded `key=value` pairs; a key given twice keeps its last value. Values are kept whole:
/// they go to the API, which judges them (the body itself is bounded by
/// `FORM_BODY_BYTES_MAX`); cutting one here would register something the person did not type.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Splits a command line into arguments as a POSIX shell would for plain words, single and
/// double quotes and backslash escapes (no expansion of any kind). None when a quote is left
/// open.
pub fn split_command(line: &str) -> Option<Vec<String>> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            c @ ('"' | '\\' | '$' | '`') => cur.push(c),
                            c => {
                                cur.push('\\');
                                cur.push(c);
                            }
                        },
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    args.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        args.push(cur);
    }
    Some(args)
}

/// Which field an API error message is about: each field lists the API members it sets; the
/// member named earliest in the message wins (the longest on a tie), so "Invalid value for
/// computeResources.maxvCpus: invalid type" is about maxvCpus and not about a "type" field.
/// A member counts only as a whole word: not inside a longer name or dotted path.
pub fn field_of<'a>(message: &str, fields: &[(&'a str, &[&str])]) -> Option<&'a str> {
    let mut best: Option<(usize, usize, &'a str)> = None;
    for (field, members) in fields {
        for member in *members {
            let mut from = 0;
            while let Some(pos) = message[from..].find(member) {
                let at = from + pos;
                let end = at + member.len();
                let before = message[..at].chars().next_back();
                let after = message[end..].chars().next();
                let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '.');
                let after_word = after.is_some_and(|c| c.is_alphanumeric());
                if !word(before) && !after_word {
                    let better = match best {
                        None => true,
                        Some((p, l, _)) => at < p || (at == p && member.len() > l),
                    };
                    if better {
                        best = Some((at, member.len(), field));
                    }
                    break;
                }
                from = end;
            }
        }
    }
    best.map(|(_, _, f)| f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode() {
        let f = parse("a=1&b=x+y%26z&c=&a=2&d");
        assert_eq!(f["a"], "2");
        assert_eq!(f["b"], "x y&z");
        assert_eq!(f["c"], "");
        assert_eq!(f["d"], "");
    }

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(
            split_command(r#"sh -c "echo 'hi there'; exit 3" a\ b ''"#).unwrap(),
            ["sh", "-c", "echo 'hi there'; exit 3", "a b", ""]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert!(split_command("echo \"open").is_none());
    }

    #[test]
    fn errors_go_to_the_field_they_name() {
        let fields: &[(&str, &[&str])] = &[
            ("name", &["computeEnvironmentName"]),
            ("type", &["type"]),
            ("cr_type", &["computeResources.type"]),
            ("max", &["computeResources.maxvCpus"]),
        ];
        let f = |m: &str| field_of(m, fields);
        assert_eq!(
            f("Invalid value for computeResources.maxvCpus: invalid type: string \"x\""),
            Some("max")
        );
        assert_eq!(
            f("Missing required member computeResources.type"),
            Some("cr_type")
        );
        assert_eq!(
            f("type \"X\" is not one of MANAGED, UNMANAGED"),
            Some("type")
        );
        assert_eq!(
            f("computeEnvironmentName must be 1 to 128 characters long, got 0"),
            Some("name")
        );
        assert_eq!(f("something else went wrong"), None);
        assert_eq!(f("subtype is wrong"), None);
    }
}
