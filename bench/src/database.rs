//! `--database-url`: a PostgreSQL URL handed to `barge server`. The report names only its host;
//! its password never appears there, nor on the report's copy of the command line.

/// The schemes libpq (and so every PostgreSQL client) accepts for a URL.
pub const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];
/// What a redacted password reads as.
pub const REDACTED: &str = "***";
/// The flag whose value is redacted on the report's command line.
pub const FLAG: &str = "--database-url";

/// clap's parser for `--database-url`: a postgres:// or postgresql:// URL.
pub fn parse(url: &str) -> Result<String, String> {
    if SCHEMES.iter().any(|s| url.starts_with(s)) {
        Ok(url.to_string())
    } else {
        Err(format!(
            "expected a PostgreSQL URL such as postgres://USER:PASSWORD@HOST:5432/DATABASE \
             (it starts with {})",
            SCHEMES.join(" or ")
        ))
    }
}

/// The URL's parts: scheme (with `://`), user information (without `@`), and the rest.
fn split(url: &str) -> (&str, Option<&str>, &str) {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    // The last `@` ends the user information: a password may hold an unencoded `@`, a host
    // never does. Taking too much only ever hides more.
    match rest.rfind('@') {
        Some(at) => (scheme, Some(&rest[..at]), &rest[at + 1..]),
        None => (scheme, None, rest),
    }
}

/// `HOST:PORT` (or `HOST`) of the URL, for the report; a URL without one (a local socket named
/// in the query, or libpq's default) says so.
pub fn host(url: &str) -> String {
    let (_, _, rest) = split(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match &rest[..end] {
        "" => "the default host (none in the URL)".to_string(),
        host => host.to_string(),
    }
}

/// The URL with its password, in the user information or as a `password=` query parameter,
/// replaced by `REDACTED`.
pub fn redact(url: &str) -> String {
    let (scheme, user_info, rest) = split(url);
    let mut out = scheme.to_string();
    if let Some(info) = user_info {
        match info.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:{REDACTED}@")),
            None => out.push_str(&format!("{info}@")),
        }
    }
    match rest.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}={REDACTED}")
                    }
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", params.join("&")));
        }
        None => out.push_str(rest),
    }
    out
}

/// The command line with the value of `--database-url` (as `--database-url URL` or
/// `--database-url=URL`) redacted.
pub fn redact_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let with_equals = format!("{FLAG}=");
    let mut after_flag = false;
    args.into_iter()
        .map(|arg| {
            let redacted = if after_flag {
                redact(&arg)
            } else if let Some(url) = arg.strip_prefix(&with_equals) {
                format!("{with_equals}{}", redact(url))
            } else {
                arg.clone()
            };
            after_flag = arg == FLAG;
            redacted
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_postgres_urls_are_taken() {
        assert!(parse("postgres://u:p@db:5432/barge").is_ok());
        assert!(parse("postgresql://db/barge").is_ok());
        let e = parse("mysql://db/barge").unwrap_err();
        assert!(
            e.contains("postgres://USER:PASSWORD@HOST:5432/DATABASE"),
            "{e}"
        );
        assert!(parse("db:5432").is_err());
    }

    #[test]
    fn the_host_is_named_without_credentials() {
        assert_eq!(
            host("postgres://u:secret@db.internal:5432/barge"),
            "db.internal:5432"
        );
        assert_eq!(host("postgresql://db/barge?sslmode=disable"), "db");
        assert_eq!(host("postgres://u:p@[::1]:5433/x"), "[::1]:5433");
        assert_eq!(host("postgres://u:p@ss@h:1/x"), "h:1");
        assert_eq!(
            host("postgres:///barge?host=/var/run/postgresql"),
            "the default host (none in the URL)"
        );
    }

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/barge"),
            "postgres://u:***@db:5432/barge"
        );
        assert_eq!(redact("postgres://u@db/barge"), "postgres://u@db/barge");
        assert_eq!(redact("postgres://db/barge"), "postgres://db/barge");
        assert_eq!(
            redact("postgres://u:p@ss@db/b?sslmode=require&password=x&PASSWORD=y"),
            "postgres://u:***@db/b?sslmode=require&password=***&PASSWORD=***"
        );
    }

    #[test]
    fn the_command_line_is_redacted_in_both_spellings() {
        let args = [
            "barge-bench",
            "--database-url",
            "postgres://u:secret@db/b",
            "--only",
            "submit",
            "--database-url=postgresql://v:hidden@db/b",
        ]
        .map(String::from);
        let out = redact_args(args).join(" ");
        assert_eq!(
            out,
            "barge-bench --database-url postgres://u:***@db/b --only submit \
             --database-url=postgresql://v:***@db/b"
        );
        assert!(!out.contains("secret") && !out.contains("hidden"));
    }
}
