//! Registry credentials for image pulls, from the agent host's Docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`): the `auths` entry of the
//! image's registry, as `docker login` writes it. AWS's repositoryCredentials (a Secrets
//! Manager ARN) cannot be resolved here and is refused at registration; logging in on the
//! agent's host is what a user does instead.
//!
//! Credential helpers (`credsStore`, `credHelpers`) are programs Barge does not run: an image
//! whose registry has one is pulled without credentials, and the agent logs why.

use std::path::PathBuf;

use base64::Engine;
use bollard::auth::DockerCredentials;
use serde_json::Value;

/// The registry Docker Hub images come from, however the config spells it.
const DOCKER_HUB: &str = "docker.io";

/// What the config says about one registry.
#[derive(Debug, PartialEq)]
pub(crate) enum Found {
    Credentials(DockerCredentials),
    /// A credential helper holds them (`docker-credential-<name>`); not run by Barge.
    Helper(String),
    Nothing,
}

/// The registry host of an image reference: its first path component when that names a host
/// (has a '.' or ':', or is `localhost`), Docker Hub otherwise.
pub(crate) fn registry_of(image: &str) -> String {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => normalize(first),
        _ => DOCKER_HUB.to_owned(),
    }
}

/// A config key or image host as a bare host[:port]: `https://index.docker.io/v1/` is
/// `docker.io`, `https://registry.example:5000/v2` is `registry.example:5000`.
fn normalize(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        _ => host,
    }
}

/// Looks `registry` up in the text of a Docker config. Err says why the config cannot be used.
pub(crate) fn find_in_config(config: &str, registry: &str) -> Result<Found, String> {
    let config: Value =
        serde_json::from_str(config).map_err(|err| format!("it is not JSON: {err}"))?;
    let helper = config
        .get("credHelpers")
        .and_then(Value::as_object)
        .and_then(|helpers| {
            helpers
                .iter()
                .find(|(key, _)| normalize(key) == registry)
                .and_then(|(_, name)| name.as_str())
        });
    if let Some(name) = helper {
        return Ok(Found::Helper(name.to_owned()));
    }
    let entry = config
        .get("auths")
        .and_then(Value::as_object)
        .and_then(|auths| auths.iter().find(|(key, _)| normalize(key) == registry));
    let Some((key, entry)) = entry else {
        // A credsStore holds every registry's login that `auths` does not spell out.
        return Ok(match config.get("credsStore").and_then(Value::as_str) {
            Some(store) => Found::Helper(store.to_owned()),
            None => Found::Nothing,
        });
    };
    let text = |name: &str| entry.get(name).and_then(Value::as_str).map(str::to_owned);
    let mut credentials = DockerCredentials {
        username: text("username"),
        password: text("password"),
        identitytoken: text("identitytoken"),
        serveraddress: Some(key.clone()),
        ..DockerCredentials::default()
    };
    // `auth` is base64 of "user:password"; the daemon wants them apart.
    if let Some(auth) = text("auth").filter(|auth| !auth.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|err| format!("auths.{key:?}.auth is not base64: {err}"))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| format!("auths.{key:?}.auth is not UTF-8 text"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| format!("auths.{key:?}.auth is not user:password"))?;
        credentials.username = Some(user.to_owned());
        credentials.password = Some(password.to_owned());
    }
    if credentials.username.is_none() && credentials.identitytoken.is_none() {
        // An entry without a login (e.g. written by a helper-based login): nothing to send.
        return Ok(Found::Nothing);
    }
    Ok(Found::Credentials(credentials))
}

/// The Docker config file of the agent's host, if there is one.
fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// The credentials to pull `image` with: the host's Docker config login for its registry, or
/// None (anonymous pull). Anything that stops the config from being used is logged.
pub(crate) fn credentials_for(image: &str) -> Option<DockerCredentials> {
    let path = config_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => {
            tracing::warn!(%err, path = %path.display(), "cannot read the Docker config; pulling without credentials");
            return None;
        }
    };
    let registry = registry_of(image);
    match find_in_config(&text, &registry) {
        Ok(Found::Credentials(credentials)) => Some(credentials),
        Ok(Found::Helper(helper)) => {
            tracing::warn!(registry, helper, path = %path.display(), "the Docker config keeps this registry's login in a credential helper, which Barge does not run; pulling without credentials (put the login in auths, e.g. docker login with no credsStore)");
            None
        }
        Ok(Found::Nothing) => None,
        Err(err) => {
            tracing::warn!(%err, path = %path.display(), "cannot use the Docker config; pulling without credentials");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_the_images_first_component_when_it_names_a_host() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1.36"), "docker.io");
        assert_eq!(
            registry_of("registry.example.com/team/app:1"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost:5000/app"), "localhost:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(
            registry_of("123456789012.dkr.ecr.us-east-1.amazonaws.com/app@sha256:ab"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
    }

    fn credentials(found: Found) -> DockerCredentials {
        match found {
            Found::Credentials(c) => c,
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    #[test]
    fn auth_is_decoded_into_user_and_password() {
        // base64("alice:s3cr:et")
        let config = r#"{"auths": {
            "https://index.docker.io/v1/": {"auth": "Ym9iOmh1Yg=="},
            "registry.example.com:5000": {"auth": "YWxpY2U6czNjcjpldA=="}
        }}"#;
        let c = credentials(find_in_config(config, "registry.example.com:5000").unwrap());
        assert_eq!(c.username.as_deref(), Some("alice"));
        assert_eq!(c.password.as_deref(), Some("s3cr:et"));
        assert_eq!(
            c.serveraddress.as_deref(),
            Some("registry.example.com:5000")
        );
        let hub = credentials(find_in_config(config, &registry_of("busybox")).unwrap());
        assert_eq!(hub.username.as_deref(), Some("bob"));
        assert_eq!(hub.password.as_deref(), Some("hub"));
        assert_eq!(
            find_in_config(config, "other.example.com").unwrap(),
            Found::Nothing
        );
    }

    #[test]
    fn identity_tokens_and_plain_fields_are_passed_on() {
        let config = r#"{"auths": {"https://r.example/v2/": {"identitytoken": "tok"},
                                   "s.example": {"username": "u", "password": "p"}}}"#;
        let c = credentials(find_in_config(config, "r.example").unwrap());
        assert_eq!(c.identitytoken.as_deref(), Some("tok"));
        let c = credentials(find_in_config(config, "s.example").unwrap());
        assert_eq!(
            (c.username.as_deref(), c.password.as_deref()),
            (Some("u"), Some("p"))
        );
    }

    #[test]
    fn credential_helpers_are_named_not_run() {
        let config = r#"{"auths": {"a.example": {}}, "credsStore": "desktop",
                         "credHelpers": {"b.example": "ecr-login"}}"#;
        assert_eq!(
            find_in_config(config, "b.example").unwrap(),
            Found::Helper("ecr-login".into())
        );
        assert_eq!(
            find_in_config(config, "c.example").unwrap(),
            Found::Helper("desktop".into())
        );
        // An auths entry without a login, as helper-based logins leave them.
        assert_eq!(find_in_config(config, "a.example").unwrap(), Found::Nothing);
    }

    #[test]
    fn a_broken_config_says_what_is_wrong() {
        assert!(find_in_config("{", "docker.io")
            .unwrap_err()
            .starts_with("it is not JSON"));
        let err =
            find_in_config(r#"{"auths": {"docker.io": {"auth": "!!"}}}"#, "docker.io").unwrap_err();
        assert!(err.contains("is not base64"), "{err}");
        let err = find_in_config(
            r#"{"auths": {"docker.io": {"auth": "bm9jb2xvbg=="}}}"#,
            "docker.io",
        )
        .unwrap_err();
        assert!(err.contains("is not user:password"), "{err}");
    }
}
