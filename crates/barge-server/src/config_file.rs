//! The configuration file (`barge up|server --config FILE`, TOML): the instance-type catalog,
//! the instance providers that scale MANAGED compute environments, and the scaler's timing.
//!
//! ```toml
//! [scaling]
//! cooldown_seconds = 60
//! register_timeout_seconds = 300
//!
//! [[instance_types]]
//! name = "small"
//! vcpus = 2
//! memory_mib = 4096
//! price = 0.05
//!
//! [providers.laptop]
//! kind = "local"
//!
//! [providers.dock]
//! kind = "docker"
//! image = "barge:latest"
//! network = "barge"
//! server_url = "http://barge-server:8433"
//!
//! [providers.cloud]
//! kind = "command"
//! launch = "/etc/barge/launch"
//! terminate = "/etc/barge/terminate"
//! server_url = "http://10.0.0.1:8433"
//! ```
//!
//! Job state change events (docs/events.md): the history kept for resuming streams, and the
//! webhooks every event is POSTed to:
//!
//! ```toml
//! [events]
//! history_events = 10000
//!
//! [[webhooks]]
//! url = "https://hooks.example.com/barge"
//! secret_file = "/etc/barge/webhook-secret"   # or: secret = "…"
//! job_queue = "prod"                            # optional: only this queue's jobs
//! ```
//!
//! Every problem is refused at start, naming the file, the key and what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use barge_core::limits::TAG_VALUE_CHARS_MAX;
use barge_core::scaling::{InstanceType, ScalingCatalog, ScalingSettings};
use serde::Deserialize;

use crate::limits::*;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    #[serde(default)]
    scaling: ScalingShape,
    #[serde(default)]
    instance_types: Vec<InstanceTypeShape>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderShape>,
    #[serde(default)]
    events: EventsShape,
    #[serde(default)]
    webhooks: Vec<WebhookShape>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsShape {
    history_events: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookShape {
    url: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    job_queue: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScalingShape {
    cooldown_seconds: Option<u64>,
    register_timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InstanceTypeShape {
    name: String,
    vcpus: u32,
    memory_mib: u64,
    #[serde(default)]
    gpus: u32,
    #[serde(default)]
    price: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderShape {
    kind: String,
    runner: Option<String>,
    image: Option<String>,
    network: Option<String>,
    server_url: Option<String>,
    binary: Option<String>,
    launch: Option<PathBuf>,
    terminate: Option<PathBuf>,
    timeout_seconds: Option<u64>,
}

/// The runner a provider's agents use (`barge agent --runner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentRunner {
    Auto,
    Docker,
    Process,
}

impl AgentRunner {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRunner::Auto => "auto",
            AgentRunner::Docker => "docker",
            AgentRunner::Process => "process",
        }
    }
}

/// One provider, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderConfig {
    /// `barge agent` child processes of the server.
    Local { runner: AgentRunner },
    /// One container per instance.
    Docker {
        image: String,
        network: Option<String>,
        server_url: String,
        runner: AgentRunner,
        /// The `barge` binary in the image.
        binary: String,
    },
    /// The operator's programs.
    Command {
        launch: PathBuf,
        terminate: PathBuf,
        /// Given to the programs as BARGE_SERVER_URL (None: this server's own address).
        server_url: Option<String>,
        timeout_ms: u64,
    },
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Local { .. } => "local",
            ProviderConfig::Docker { .. } => "docker",
            ProviderConfig::Command { .. } => "command",
        }
    }
}

/// The configuration file, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingConfig {
    pub path: PathBuf,
    pub settings: ScalingSettings,
    pub instance_types: Vec<InstanceType>,
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Job state change events kept for resuming streams (`[events] history_events`).
    pub events_history: usize,
    /// Where job state change events are POSTed (`[[webhooks]]`).
    pub webhooks: Vec<crate::events::webhooks::WebhookConfig>,
}

impl ScalingConfig {
    /// What the core needs to check environments and plan.
    pub fn catalog(&self) -> ScalingCatalog {
        ScalingCatalog::new(
            self.providers.keys().cloned().collect(),
            self.instance_types.clone(),
        )
    }

    /// A provider whose agents join at this server's own address (a local provider, or a
    /// command provider without server_url), if any.
    pub fn local_instances(&self) -> Option<&str> {
        self.providers
            .iter()
            .find(|(_, p)| {
                matches!(
                    p,
                    ProviderConfig::Local { .. }
                        | ProviderConfig::Command {
                            server_url: None,
                            ..
                        }
                )
            })
            .map(|(name, _)| name.as_str())
    }

    /// Reads and checks the file; the error names the file, the key and what to do.
    pub fn load(path: &Path) -> anyhow::Result<ScalingConfig> {
        let file = std::fs::File::open(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the configuration file {}: {e}; give --config an existing TOML file",
                path.display()
            )
        })?;
        let mut text = String::new();
        file.take(CONFIG_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the configuration file {}: {e}; it must be UTF-8 TOML",
                    path.display()
                )
            })?;
        if text.len() as u64 > CONFIG_FILE_BYTES_MAX {
            anyhow::bail!(
                "the configuration file {} is larger than {CONFIG_FILE_BYTES_MAX} bytes; is it the right file?",
                path.display()
            );
        }
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> anyhow::Result<ScalingConfig> {
        let at = path.display();
        let shape: FileShape = toml::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "configuration file {at}: {}; the keys are [scaling], [[instance_types]], [providers.NAME] (see README, \"Scaling\"), [events] and [[webhooks]] (docs/events.md)",
                e.to_string().trim_end()
            )
        })?;
        let bad =
            |key: String, what: String| anyhow::anyhow!("configuration file {at}: {key}: {what}");

        let cooldown_s = shape
            .scaling
            .cooldown_seconds
            .unwrap_or(SCALING_COOLDOWN_SECONDS_DEFAULT);
        if cooldown_s > SCALING_SECONDS_MAX {
            return Err(bad(
                "scaling.cooldown_seconds".into(),
                format!("at most {SCALING_SECONDS_MAX} (a day)"),
            ));
        }
        let register_s = shape
            .scaling
            .register_timeout_seconds
            .unwrap_or(SCALING_REGISTER_TIMEOUT_SECONDS_DEFAULT);
        if !(SCALING_REGISTER_TIMEOUT_SECONDS_MIN..=SCALING_SECONDS_MAX).contains(&register_s) {
            return Err(bad(
                "scaling.register_timeout_seconds".into(),
                format!(
                    "must be between {SCALING_REGISTER_TIMEOUT_SECONDS_MIN} and {SCALING_SECONDS_MAX}; an instance needs time to start"
                ),
            ));
        }

        if shape.instance_types.len() > CONFIG_INSTANCE_TYPES_MAX {
            return Err(bad(
                "instance_types".into(),
                format!("at most {CONFIG_INSTANCE_TYPES_MAX} instance types"),
            ));
        }
        let mut names = BTreeSet::new();
        let mut instance_types = Vec::new();
        for (i, t) in shape.instance_types.into_iter().enumerate() {
            let key = |k: &str| format!("instance_types[{i}].{k}");
            if t.name.is_empty()
                || t.name.len() > TAG_VALUE_CHARS_MAX
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(bad(
                    key("name"),
                    format!("{:?} must be 1 to {TAG_VALUE_CHARS_MAX} letters, digits, '-', '_' or '.' (like m5.large)", t.name),
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(bad(key("name"), format!("{:?} is defined twice", t.name)));
            }
            if t.vcpus == 0 || t.memory_mib == 0 {
                return Err(bad(
                    key(if t.vcpus == 0 { "vcpus" } else { "memory_mib" }),
                    "must be at least 1".into(),
                ));
            }
            if !t.price.is_finite() || t.price < 0.0 {
                return Err(bad(key("price"), "must be a number, 0 or more".into()));
            }
            instance_types.push(InstanceType {
                name: t.name,
                vcpus: t.vcpus,
                memory_mib: t.memory_mib,
                gpus: t.gpus,
                price: t.price,
            });
        }

        if shape.providers.len() > CONFIG_PROVIDERS_MAX {
            return Err(bad(
                "providers".into(),
                format!("at most {CONFIG_PROVIDERS_MAX} providers"),
            ));
        }
        if !shape.providers.is_empty() && instance_types.is_empty() {
            return Err(bad(
                "instance_types".into(),
                "providers need instance types to launch: add at least one [[instance_types]] with name, vcpus and memory_mib".into(),
            ));
        }
        let mut providers = BTreeMap::new();
        for (name, p) in shape.providers {
            let key = |k: &str| format!("providers.{name}.{k}");
            if name.is_empty()
                || name.len() > TAG_VALUE_CHARS_MAX
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(bad(
                    format!("providers.{name}"),
                    format!("a provider's name is the value of the barge:provider tag: 1 to {TAG_VALUE_CHARS_MAX} letters, digits, '-', '_' or '.'"),
                ));
            }
            let runner = match p.runner.as_deref() {
                None | Some("process") => AgentRunner::Process,
                Some("docker") => AgentRunner::Docker,
                Some("auto") => AgentRunner::Auto,
                Some(other) => {
                    return Err(bad(
                        key("runner"),
                        format!("{other:?} is not a runner: process, docker or auto"),
                    ))
                }
            };
            let unused = |keys: &[(&str, bool)]| -> anyhow::Result<()> {
                match keys.iter().find(|(_, given)| *given) {
                    Some((k, _)) => Err(bad(
                        key(k),
                        format!("does not apply to a {} provider; remove it", p.kind),
                    )),
                    None => Ok(()),
                }
            };
            let check_url = |url: &str| -> anyhow::Result<()> {
                if url.starts_with("http://") && url.len() > "http://".len() {
                    Ok(())
                } else {
                    Err(bad(
                        key("server_url"),
                        format!("{url:?} must be http://HOST:PORT, the address instances reach this server at"),
                    ))
                }
            };
            let config = match p.kind.as_str() {
                "local" => {
                    unused(&[
                        ("image", p.image.is_some()),
                        ("network", p.network.is_some()),
                        ("server_url", p.server_url.is_some()),
                        ("binary", p.binary.is_some()),
                        ("launch", p.launch.is_some()),
                        ("terminate", p.terminate.is_some()),
                        ("timeout_seconds", p.timeout_seconds.is_some()),
                    ])?;
                    ProviderConfig::Local { runner }
                }
                "docker" => {
                    unused(&[
                        ("launch", p.launch.is_some()),
                        ("terminate", p.terminate.is_some()),
                        ("timeout_seconds", p.timeout_seconds.is_some()),
                    ])?;
                    let image = p.image.filter(|i| !i.is_empty()).ok_or_else(|| {
                        bad(
                            key("image"),
                            "is required: an image holding the barge binary (its agent runs in each instance's container)".into(),
                        )
                    })?;
                    let server_url = p.server_url.ok_or_else(|| {
                        bad(
                            key("server_url"),
                            "is required: the http://HOST:PORT at which the containers reach this server (127.0.0.1 is the container itself)".into(),
                        )
                    })?;
                    check_url(&server_url)?;
                    ProviderConfig::Docker {
                        image,
                        network: p.network.filter(|n| !n.is_empty()),
                        server_url,
                        runner,
                        binary: p.binary.unwrap_or_else(|| "barge".into()),
                    }
                }
                "command" => {
                    unused(&[
                        ("image", p.image.is_some()),
                        ("network", p.network.is_some()),
                        ("binary", p.binary.is_some()),
                        ("runner", p.runner.is_some()),
                    ])?;
                    let program = |k: &str, v: Option<PathBuf>| -> anyhow::Result<PathBuf> {
                        let path = v.ok_or_else(|| {
                            bad(
                                key(k),
                                format!("is required: the program Barge runs to {k} an instance (see README, \"The command provider\")"),
                            )
                        })?;
                        check_program(&path).map_err(|e| bad(key(k), e))?;
                        Ok(path)
                    };
                    let launch = program("launch", p.launch)?;
                    let terminate = program("terminate", p.terminate)?;
                    if let Some(url) = &p.server_url {
                        check_url(url)?;
                    }
                    let timeout_s = p
                        .timeout_seconds
                        .unwrap_or(COMMAND_PROVIDER_TIMEOUT_SECONDS_DEFAULT);
                    if !(1..=COMMAND_PROVIDER_TIMEOUT_SECONDS_MAX).contains(&timeout_s) {
                        return Err(bad(
                            key("timeout_seconds"),
                            format!("must be between 1 and {COMMAND_PROVIDER_TIMEOUT_SECONDS_MAX}"),
                        ));
                    }
                    ProviderConfig::Command {
                        launch,
                        terminate,
                        server_url: p.server_url,
                        timeout_ms: timeout_s * 1000,
                    }
                }
                other => {
                    return Err(bad(
                        key("kind"),
                        format!("{other:?} is not a provider kind: local, docker or command"),
                    ))
                }
            };
            providers.insert(name, config);
        }
        let events_history = shape
            .events
            .history_events
            .unwrap_or(EVENTS_HISTORY_EVENTS_DEFAULT);
        if !(EVENTS_HISTORY_EVENTS_MIN..=EVENTS_HISTORY_EVENTS_MAX).contains(&events_history) {
            return Err(bad(
                "events.history_events".into(),
                format!("must be between {EVENTS_HISTORY_EVENTS_MIN} and {EVENTS_HISTORY_EVENTS_MAX}; each held event is a few KiB of memory"),
            ));
        }
        let webhooks = webhooks(shape.webhooks, path).map_err(|(key, what)| bad(key, what))?;
        Ok(ScalingConfig {
            path: path.to_path_buf(),
            settings: ScalingSettings {
                cooldown_ms: cooldown_s as i64 * 1000,
                register_timeout_ms: register_s as i64 * 1000,
            },
            instance_types,
            providers,
            events_history,
            webhooks,
        })
    }
}

/// `[[webhooks]]`, checked: a URL we can POST to, one secret (inline or from a file).
fn webhooks(
    shapes: Vec<WebhookShape>,
    path: &Path,
) -> Result<Vec<crate::events::webhooks::WebhookConfig>, (String, String)> {
    if shapes.len() > WEBHOOKS_MAX {
        return Err((
            "webhooks".into(),
            format!("at most {WEBHOOKS_MAX} webhooks"),
        ));
    }
    let mut out = Vec::new();
    for (i, w) in shapes.into_iter().enumerate() {
        let key = |k: &str| format!("webhooks[{i}].{k}");
        crate::events::webhooks::parse_url(&w.url)
            .map_err(|e| (key("url"), format!("{:?} {e}", w.url)))?;
        let secret = match (w.secret, w.secret_file) {
            (Some(s), None) => s,
            (None, Some(file)) => {
                // Relative to the configuration file, like any path an operator writes there.
                let file = match file.is_absolute() {
                    true => file,
                    false => path.parent().unwrap_or(Path::new(".")).join(file),
                };
                let mut text = String::new();
                std::fs::File::open(&file)
                    .and_then(|f| {
                        f.take(WEBHOOK_SECRET_FILE_BYTES_MAX + 1)
                            .read_to_string(&mut text)
                    })
                    .map_err(|e| {
                        (
                            key("secret_file"),
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?;
                if text.len() as u64 > WEBHOOK_SECRET_FILE_BYTES_MAX {
                    return Err((
                        key("secret_file"),
                        format!("{} is larger than {WEBHOOK_SECRET_FILE_BYTES_MAX} bytes; a secret is one line", file.display()),
                    ));
                }
                text.lines().next().unwrap_or("").trim().to_string()
            }
            _ => {
                return Err((
                    key("secret"),
                    "give exactly one of secret and secret_file: every delivery is signed with it"
                        .into(),
                ))
            }
        };
        if secret.is_empty() {
            return Err((key("secret"), "must not be empty".into()));
        }
        out.push(crate::events::webhooks::WebhookConfig {
            url: w.url,
            secret,
            job_queue: w.job_queue.map(|q| match q.rsplit_once("job-queue/") {
                Some((_, name)) => name.to_string(),
                None => q,
            }),
        });
    }
    Ok(out)
}

/// Ok when `path` is an absolute path to an executable file.
fn check_program(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !path.is_absolute() {
        return Err(format!(
            "{} must be an absolute path (the server's working directory is no place to look)",
            path.display()
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "{}: {e}; give the path of an existing program",
            path.display()
        )
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!(
            "{} is not an executable file; chmod +x it",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<ScalingConfig> {
        ScalingConfig::parse(Path::new("/etc/barge.toml"), text)
    }

    #[test]
    fn a_full_file_is_read() {
        let c = parse(
            r#"
            [scaling]
            cooldown_seconds = 3
            [[instance_types]]
            name = "small"
            vcpus = 1
            memory_mib = 512
            [[instance_types]]
            name = "big"
            vcpus = 4
            memory_mib = 8192
            gpus = 1
            price = 0.5
            [providers.laptop]
            kind = "local"
            [providers.dock]
            kind = "docker"
            image = "barge:e2e"
            network = "net"
            server_url = "http://server:8433"
            [providers.cloud]
            kind = "command"
            launch = "/bin/true"
            terminate = "/bin/true"
            "#,
        )
        .unwrap();
        assert_eq!(c.settings.cooldown_ms, 3000);
        assert_eq!(
            c.settings.register_timeout_ms,
            SCALING_REGISTER_TIMEOUT_SECONDS_DEFAULT as i64 * 1000
        );
        assert_eq!(c.instance_types.len(), 2);
        assert_eq!(
            c.providers["laptop"],
            ProviderConfig::Local {
                runner: AgentRunner::Process
            }
        );
        assert!(
            matches!(&c.providers["dock"], ProviderConfig::Docker { network: Some(n), .. } if n == "net")
        );
        assert!(
            matches!(&c.providers["cloud"], ProviderConfig::Command { timeout_ms, .. } if *timeout_ms == COMMAND_PROVIDER_TIMEOUT_SECONDS_DEFAULT * 1000)
        );
        assert_eq!(
            c.catalog().providers.into_iter().collect::<Vec<_>>(),
            ["cloud", "dock", "laptop"]
        );
    }

    #[test]
    fn mistakes_name_the_file_and_the_key() {
        let e = |text: &str| parse(text).unwrap_err().to_string();
        let types = "[[instance_types]]\nname = \"s\"\nvcpus = 1\nmemory_mib = 1\n";
        let m = e("[scaling]\ncooldown = 3\n");
        assert!(
            m.contains("/etc/barge.toml") && m.contains("cooldown"),
            "{m}"
        );
        let m = e(&format!("{types}[providers.x]\nkind = \"cloudy\"\n"));
        assert!(
            m.contains("providers.x.kind") && m.contains("local, docker or command"),
            "{m}"
        );
        let m = e(&format!(
            "{types}[providers.x]\nkind = \"docker\"\nserver_url = \"http://s:1\"\n"
        ));
        assert!(m.contains("providers.x.image"), "{m}");
        let m = e(&format!(
            "{types}[providers.x]\nkind = \"docker\"\nimage = \"i\"\n"
        ));
        assert!(m.contains("providers.x.server_url"), "{m}");
        let m = e(&format!("{types}[providers.x]\nkind = \"command\"\nlaunch = \"relative\"\nterminate = \"/bin/true\"\n"));
        assert!(
            m.contains("providers.x.launch") && m.contains("absolute"),
            "{m}"
        );
        let m = e(&format!(
            "{types}[providers.x]\nkind = \"local\"\nimage = \"i\"\n"
        ));
        assert!(
            m.contains("providers.x.image") && m.contains("does not apply"),
            "{m}"
        );
        let m = e("[providers.x]\nkind = \"local\"\n");
        assert!(m.contains("instance_types"), "{m}");
        let m = e(&format!("{types}{types}"));
        assert!(
            m.contains("instance_types[1].name") && m.contains("twice"),
            "{m}"
        );
        let m = e("[[instance_types]]\nname = \"s\"\nvcpus = 0\nmemory_mib = 1\n");
        assert!(m.contains("instance_types[0].vcpus"), "{m}");
        let m = e("[scaling]\nregister_timeout_seconds = 1\n");
        assert!(m.contains("scaling.register_timeout_seconds"), "{m}");
    }

    #[test]
    fn events_and_webhooks_are_read_and_checked() {
        let c = parse(
            r#"
            [events]
            history_events = 50
            [[webhooks]]
            url = "http://127.0.0.1:9/hook"
            secret = "s"
            job_queue = "arn:aws:batch:us-east-1:000000000000:job-queue/prod"
            "#,
        )
        .unwrap();
        assert_eq!(c.events_history, 50);
        assert_eq!(c.webhooks.len(), 1);
        assert_eq!(c.webhooks[0].job_queue.as_deref(), Some("prod"));
        assert!(!format!("{:?}", c.webhooks[0]).contains("\"s\""));
        assert_eq!(
            parse("").unwrap().events_history,
            EVENTS_HISTORY_EVENTS_DEFAULT
        );
        let m = parse("[events]\nhistory_events = 1")
            .unwrap_err()
            .to_string();
        assert!(m.contains("events.history_events"), "{m}");
        let m = parse("[[webhooks]]\nurl = \"ftp://x\"\nsecret = \"s\"")
            .unwrap_err()
            .to_string();
        assert!(m.contains("webhooks[0].url"), "{m}");
        let m = parse("[[webhooks]]\nurl = \"http://x\"")
            .unwrap_err()
            .to_string();
        assert!(m.contains("webhooks[0].secret"), "{m}");
        let m = parse("[[webhooks]]\nurl = \"http://x\"\nsecret_file = \"/nonexistent/s\"")
            .unwrap_err()
            .to_string();
        assert!(m.contains("webhooks[0].secret_file"), "{m}");
    }
}
