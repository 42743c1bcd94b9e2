//! The container properties that become the Docker host configuration of an attempt: AWS's
//! `volumes` + `mountPoints`, `ulimits`, `privileged`, `readonlyRootFilesystem` and
//! `linuxParameters`, read from the members `ContainerProperties` keeps in `other`, checked
//! with messages that name the member, and turned into the typed [`ContainerHost`] the agent
//! receives in its `AttemptSpec`.
//!
//! Members that cannot apply on Barge's hosts are sorted here too: [`REFUSED`] ones are
//! answered with a ClientException that says what to do instead (a job that silently runs
//! without its secrets or its EFS volume would be worse than one that is refused), and
//! [`RECORDED`] ones are kept and echoed but change nothing (docs/api.md says so for each).
//!
//! SubmitJob's containerOverrides cannot change any of these members (AWS's ContainerOverrides
//! has only command, environment, instanceType, memory, vcpus and resourceRequirements), so a
//! definition that registered has settings that hold for all its jobs.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::limits::{CONTAINER_LIST_ENTRIES_MAX, SWAPPINESS_MAX};
use crate::model::ContainerProperties;

/// Host settings of one attempt's container, as the Docker runner applies them. Every member
/// defaults to "as Docker would without it", so specs written before it existed still read.
/// The process runner honours none of them (documented).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerHost {
    /// From mountPoints, each joined with the volume it names.
    pub mounts: Vec<Mount>,
    pub ulimits: Vec<Ulimit>,
    pub privileged: bool,
    pub readonly_root_filesystem: bool,
    pub devices: Vec<Device>,
    /// linuxParameters.initProcessEnabled: Docker's init runs as PID 1 and reaps children.
    pub init: bool,
    /// linuxParameters.sharedMemorySize: the size of /dev/shm; None is Docker's default (64 MiB).
    pub shm_size_mib: Option<u64>,
    pub tmpfs: Vec<Tmpfs>,
    /// linuxParameters.maxSwap: swap allowed beyond the memory limit. 0 (also when maxSwap is
    /// absent) is no swap: exceeding the memory limit is an OOM kill, as on AWS's instances,
    /// which have no swap unless configured.
    pub max_swap_mib: u64,
    /// linuxParameters.swappiness, only when maxSwap is given (AWS ignores it otherwise).
    pub swappiness: Option<u8>,
    /// GPU resourceRequirements: that many GPUs requested from Docker's nvidia driver.
    pub gpus: u32,
    /// Set when the job's container properties cannot be honoured (a definition registered
    /// before Barge checked them, read back from the store): the runner fails the attempt with
    /// this as its CannotCreateContainerError reason instead of running it differently.
    pub refused: Option<String>,
}

/// A mountPoint: a host directory (volume with host.sourcePath) or, for a volume without
/// one, an anonymous Docker volume that lives as long as the container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub host_path: Option<String>,
    pub container_path: String,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub host_path: String,
    pub container_path: String,
    /// Docker's cgroup permissions: some of "r", "w", "m" (READ, WRITE, MKNOD).
    pub permissions: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tmpfs {
    pub container_path: String,
    pub size_mib: u64,
    pub mount_options: Vec<String>,
}

/// Members refused at registration, with what to do instead.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "secrets",
        "Barge cannot read AWS Secrets Manager or SSM Parameter Store; pass the values in \
         environment, or put them in a file on the agent's host and mount it with volumes and \
         mountPoints",
    ),
    (
        "repositoryCredentials",
        "Barge cannot resolve an AWS Secrets Manager ARN; log in to the registry on the agent's \
         host (docker login), and pulls use that host's Docker config",
    ),
];

/// Members kept and echoed that change nothing on Barge's hosts.
pub const RECORDED: &[&str] = &[
    "logConfiguration",
    "networkConfiguration",
    "fargatePlatformConfiguration",
    "ephemeralStorage",
    "runtimePlatform",
    "jobRoleArn",
    "executionRoleArn",
    "enableExecuteCommand",
    "instanceType",
];

/// ulimit names AWS accepts.
const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// tmpfs mountOptions AWS accepts (the part before `=` for mode, uid, gid, nr_inodes,
/// nr_blocks, mpol).
const TMPFS_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireVolume {
    host: Option<WireHost>,
    name: Option<String>,
    efs_volume_configuration: Option<Value>,
    s3files_volume_configuration: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireHost {
    source_path: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMountPoint {
    container_path: Option<String>,
    read_only: Option<bool>,
    source_volume: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUlimit {
    name: String,
    soft_limit: i64,
    hard_limit: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct WireLinuxParameters {
    devices: Option<Vec<WireDevice>>,
    init_process_enabled: Option<bool>,
    shared_memory_size: Option<i64>,
    tmpfs: Option<Vec<WireTmpfs>>,
    max_swap: Option<i64>,
    swappiness: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDevice {
    host_path: String,
    container_path: Option<String>,
    permissions: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireTmpfs {
    container_path: String,
    size: i64,
    mount_options: Option<Vec<String>>,
}

/// Reads member `name` of `other` as `T`; absent or null is None. `shape` says what was
/// expected, for the message.
fn member<T: DeserializeOwned>(
    other: &Map<String, Value>,
    field: &str,
    name: &str,
    shape: &str,
) -> Result<Option<T>, String> {
    match other.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|err| format!("{field}.{name} must be {shape}: {err}")),
    }
}

fn check_len(at: &str, len: usize) -> Result<(), String> {
    if len > CONTAINER_LIST_ENTRIES_MAX {
        return Err(format!(
            "{at} has {len} entries; at most {CONTAINER_LIST_ENTRIES_MAX} are allowed"
        ));
    }
    Ok(())
}

/// Docker's bind syntax separates host path, container path and options with ':', and tmpfs
/// options with ','; a path holding either could not be passed through whole.
fn check_path(at: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{at} {path:?} must be an absolute path"));
    }
    if path.contains([':', ',']) {
        return Err(format!("{at} {path:?} must not contain ':' or ','"));
    }
    Ok(())
}

fn non_negative_mib(at: &str, value: i64, least: i64) -> Result<u64, String> {
    if value < least {
        return Err(format!("{at} must be at least {least} (MiB), got {value}"));
    }
    Ok(value as u64)
}

/// Checks the Docker-facing members of a container (`field` names it in messages, e.g.
/// `containerProperties`) and returns its host settings. GPUs are set by the caller from the
/// job's resources.
pub fn container_host(field: &str, c: &ContainerProperties) -> Result<ContainerHost, String> {
    let other = &c.other;
    for (name, instead) in REFUSED {
        if other.get(*name).is_some_and(|v| !v.is_null()) {
            return Err(format!("{field}.{name} is not supported: {instead}"));
        }
    }
    let mut host = ContainerHost::default();

    let volumes: Vec<WireVolume> =
        member(other, field, "volumes", "a list of volumes")?.unwrap_or_default();
    check_len(&format!("{field}.volumes"), volumes.len())?;
    // (name, host path) of each volume.
    let mut named: Vec<(String, Option<String>)> = Vec::new();
    for (n, v) in volumes.iter().enumerate() {
        let at = format!("{field}.volumes[{n}]");
        if v.efs_volume_configuration.is_some() {
            return Err(format!(
                "{at}.efsVolumeConfiguration is not supported: Barge cannot mount Amazon EFS; \
                 mount the file system on the agent's host and give its directory as \
                 host.sourcePath"
            ));
        }
        if v.s3files_volume_configuration.is_some() {
            return Err(format!(
                "{at}.s3filesVolumeConfiguration is not supported: Barge cannot mount S3; copy \
                 the files to the agent's host and give their directory as host.sourcePath"
            ));
        }
        let name = v
            .name
            .clone()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| format!("{at}.name is required: mountPoints name volumes by it"))?;
        if named.iter().any(|(seen, _)| *seen == name) {
            return Err(format!("{at}.name {name:?} names two volumes"));
        }
        let source = v.host.as_ref().and_then(|h| h.source_path.clone());
        if let Some(path) = &source {
            check_path(&format!("{at}.host.sourcePath"), path)?;
        }
        named.push((name, source));
    }

    let mount_points: Vec<WireMountPoint> =
        member(other, field, "mountPoints", "a list of mount points")?.unwrap_or_default();
    check_len(&format!("{field}.mountPoints"), mount_points.len())?;
    let mut container_paths: Vec<String> = Vec::new();
    let mut claim = |at: &str, path: &str| -> Result<(), String> {
        check_path(at, path)?;
        if container_paths.iter().any(|seen| seen == path) {
            return Err(format!("{at} {path:?} is mounted twice"));
        }
        container_paths.push(path.to_owned());
        Ok(())
    };
    for (n, m) in mount_points.iter().enumerate() {
        let at = format!("{field}.mountPoints[{n}]");
        let source = m
            .source_volume
            .as_deref()
            .ok_or_else(|| format!("{at}.sourceVolume is required"))?;
        let Some((_, host_path)) = named.iter().find(|(name, _)| name == source) else {
            return Err(format!("{at}.sourceVolume names no volume ({source:?})"));
        };
        let container_path = m
            .container_path
            .clone()
            .ok_or_else(|| format!("{at}.containerPath is required"))?;
        claim(&format!("{at}.containerPath"), &container_path)?;
        host.mounts.push(Mount {
            host_path: host_path.clone(),
            container_path,
            read_only: m.read_only.unwrap_or(false),
        });
    }

    let ulimits: Vec<WireUlimit> = member(
        other,
        field,
        "ulimits",
        "a list of {name, softLimit, hardLimit}",
    )?
    .unwrap_or_default();
    check_len(&format!("{field}.ulimits"), ulimits.len())?;
    for (n, u) in ulimits.into_iter().enumerate() {
        let at = format!("{field}.ulimits[{n}]");
        if !ULIMIT_NAMES.contains(&u.name.as_str()) {
            return Err(format!(
                "{at}.name {:?} is not one of {}",
                u.name,
                ULIMIT_NAMES.join(", ")
            ));
        }
        if u.soft_limit < 0 || u.hard_limit < 0 {
            return Err(format!(
                "{at}: softLimit and hardLimit must not be negative"
            ));
        }
        if u.soft_limit > u.hard_limit {
            return Err(format!(
                "{at}.softLimit {} is above hardLimit {}",
                u.soft_limit, u.hard_limit
            ));
        }
        host.ulimits.push(Ulimit {
            name: u.name,
            soft: u.soft_limit,
            hard: u.hard_limit,
        });
    }

    host.privileged = member(other, field, "privileged", "true or false")?.unwrap_or(false);
    host.readonly_root_filesystem =
        member(other, field, "readonlyRootFilesystem", "true or false")?.unwrap_or(false);

    let linux: WireLinuxParameters = member(
        other,
        field,
        "linuxParameters",
        "an object of devices, initProcessEnabled, sharedMemorySize, tmpfs, maxSwap, swappiness",
    )?
    .unwrap_or_default();
    let lp = format!("{field}.linuxParameters");
    let devices = linux.devices.unwrap_or_default();
    check_len(&format!("{lp}.devices"), devices.len())?;
    for (n, d) in devices.into_iter().enumerate() {
        let at = format!("{lp}.devices[{n}]");
        check_path(&format!("{at}.hostPath"), &d.host_path)?;
        let container_path = d.container_path.unwrap_or_else(|| d.host_path.clone());
        check_path(&format!("{at}.containerPath"), &container_path)?;
        let mut permissions = String::new();
        for p in d.permissions.iter().flatten() {
            let letter = match p.as_str() {
                "READ" => 'r',
                "WRITE" => 'w',
                "MKNOD" => 'm',
                other => {
                    return Err(format!(
                        "{at}.permissions {other:?} is not one of READ, WRITE, MKNOD"
                    ))
                }
            };
            if !permissions.contains(letter) {
                permissions.push(letter);
            }
        }
        if permissions.is_empty() {
            // AWS: without permissions the container may read, write and mknod the device.
            permissions = "rwm".to_owned();
        }
        host.devices.push(Device {
            host_path: d.host_path,
            container_path,
            permissions,
        });
    }
    host.init = linux.init_process_enabled.unwrap_or(false);
    if let Some(size) = linux.shared_memory_size {
        host.shm_size_mib = Some(non_negative_mib(
            &format!("{lp}.sharedMemorySize"),
            size,
            1,
        )?);
    }
    let tmpfs = linux.tmpfs.unwrap_or_default();
    check_len(&format!("{lp}.tmpfs"), tmpfs.len())?;
    for (n, t) in tmpfs.into_iter().enumerate() {
        let at = format!("{lp}.tmpfs[{n}]");
        claim(&format!("{at}.containerPath"), &t.container_path)?;
        let size_mib = non_negative_mib(&format!("{at}.size"), t.size, 1)?;
        let mount_options = t.mount_options.unwrap_or_default();
        for option in &mount_options {
            let name = option.split_once('=').map_or(option.as_str(), |(n, _)| n);
            if !TMPFS_OPTIONS.contains(&name) || option.contains(',') {
                return Err(format!(
                    "{at}.mountOptions {option:?} is not a tmpfs mount option AWS accepts ({})",
                    TMPFS_OPTIONS.join(", ")
                ));
            }
        }
        host.tmpfs.push(Tmpfs {
            container_path: t.container_path,
            size_mib,
            mount_options,
        });
    }
    if let Some(swappiness) = linux.swappiness {
        if !(0..=SWAPPINESS_MAX).contains(&swappiness) {
            return Err(format!(
                "{lp}.swappiness must be between 0 and {SWAPPINESS_MAX}, got {swappiness}"
            ));
        }
    }
    if let Some(max_swap) = linux.max_swap {
        host.max_swap_mib = non_negative_mib(&format!("{lp}.maxSwap"), max_swap, 0)?;
        // AWS: swappiness counts only with maxSwap; without it the kernel's default stays.
        host.swappiness = linux.swappiness.map(|s| s as u8);
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(other: Value) -> ContainerProperties {
        ContainerProperties {
            image: Some("busybox".into()),
            other: other.as_object().cloned().unwrap(),
            ..ContainerProperties::default()
        }
    }

    fn host(other: Value) -> Result<ContainerHost, String> {
        container_host("containerProperties", &props(other))
    }

    #[test]
    fn nothing_given_is_dockers_defaults() {
        assert_eq!(host(json!({})).unwrap(), ContainerHost::default());
    }

    #[test]
    fn every_member_maps_onto_the_host_settings() {
        let h = host(json!({
            "volumes": [{"name": "data", "host": {"sourcePath": "/srv/data"}}, {"name": "scratch"}],
            "mountPoints": [
                {"sourceVolume": "data", "containerPath": "/data", "readOnly": true},
                {"sourceVolume": "scratch", "containerPath": "/scratch"}
            ],
            "ulimits": [{"name": "nofile", "softLimit": 1024, "hardLimit": 2048}],
            "privileged": true,
            "readonlyRootFilesystem": true,
            "linuxParameters": {
                "devices": [{"hostPath": "/dev/fuse", "permissions": ["READ", "WRITE", "READ"]},
                            {"hostPath": "/dev/null", "containerPath": "/dev/nothing"}],
                "initProcessEnabled": true,
                "sharedMemorySize": 128,
                "tmpfs": [{"containerPath": "/tmp", "size": 32, "mountOptions": ["noexec", "mode=1777"]}],
                "maxSwap": 512,
                "swappiness": 10
            },
            "logConfiguration": {"logDriver": "awslogs"}
        }))
        .unwrap();
        assert_eq!(
            h.mounts,
            vec![
                Mount {
                    host_path: Some("/srv/data".into()),
                    container_path: "/data".into(),
                    read_only: true
                },
                Mount {
                    host_path: None,
                    container_path: "/scratch".into(),
                    read_only: false
                },
            ]
        );
        assert_eq!(
            h.ulimits,
            vec![Ulimit {
                name: "nofile".into(),
                soft: 1024,
                hard: 2048
            }]
        );
        assert!(h.privileged && h.readonly_root_filesystem && h.init);
        assert_eq!(h.devices[0].permissions, "rw");
        assert_eq!(h.devices[0].container_path, "/dev/fuse");
        assert_eq!(h.devices[1].permissions, "rwm");
        assert_eq!(h.devices[1].container_path, "/dev/nothing");
        assert_eq!(h.shm_size_mib, Some(128));
        assert_eq!(
            h.tmpfs,
            vec![Tmpfs {
                container_path: "/tmp".into(),
                size_mib: 32,
                mount_options: vec!["noexec".into(), "mode=1777".into()]
            }]
        );
        assert_eq!((h.max_swap_mib, h.swappiness), (512, Some(10)));
    }

    #[test]
    fn swappiness_without_max_swap_is_ignored_as_aws_does() {
        let h = host(json!({"linuxParameters": {"swappiness": 10}})).unwrap();
        assert_eq!((h.max_swap_mib, h.swappiness), (0, None));
    }

    #[test]
    fn bad_input_names_the_member() {
        let cases = [
            (
                json!({"volumes": [{"name": "a"}], "mountPoints": [{"sourceVolume": "b", "containerPath": "/b"}]}),
                "containerProperties.mountPoints[0].sourceVolume names no volume",
            ),
            (
                json!({"volumes": [{"name": "a", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}]}),
                "containerProperties.volumes[0].efsVolumeConfiguration is not supported",
            ),
            (
                json!({"secrets": [{"name": "A", "valueFrom": "arn:aws:ssm:x"}]}),
                "containerProperties.secrets is not supported",
            ),
            (
                json!({"repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:x"}}),
                "containerProperties.repositoryCredentials is not supported",
            ),
            (
                json!({"ulimits": [{"name": "files", "softLimit": 1, "hardLimit": 1}]}),
                "containerProperties.ulimits[0].name \"files\" is not one of",
            ),
            (
                json!({"ulimits": [{"name": "nofile", "softLimit": 2, "hardLimit": 1}]}),
                "containerProperties.ulimits[0].softLimit 2 is above hardLimit 1",
            ),
            (
                json!({"ulimits": [{"name": "nofile"}]}),
                "containerProperties.ulimits must be",
            ),
            (
                json!({"privileged": "yes"}),
                "containerProperties.privileged must be true or false",
            ),
            (
                json!({"linuxParameters": {"swappiness": 101, "maxSwap": 1}}),
                "containerProperties.linuxParameters.swappiness must be between 0 and 100",
            ),
            (
                json!({"linuxParameters": {"maxSwap": -1}}),
                "containerProperties.linuxParameters.maxSwap must be at least 0",
            ),
            (
                json!({"linuxParameters": {"sharedMemorySize": 0}}),
                "containerProperties.linuxParameters.sharedMemorySize must be at least 1",
            ),
            (
                json!({"linuxParameters": {"tmpfs": [{"containerPath": "tmp", "size": 1}]}}),
                "containerProperties.linuxParameters.tmpfs[0].containerPath \"tmp\" must be an absolute path",
            ),
            (
                json!({"linuxParameters": {"tmpfs": [{"containerPath": "/t", "size": 1, "mountOptions": ["size=9"]}]}}),
                "containerProperties.linuxParameters.tmpfs[0].mountOptions \"size=9\"",
            ),
            (
                json!({"linuxParameters": {"devices": [{"hostPath": "/dev/x", "permissions": ["ALL"]}]}}),
                "containerProperties.linuxParameters.devices[0].permissions \"ALL\"",
            ),
            (
                json!({"volumes": [{"name": "a", "host": {"sourcePath": "/x:y"}}]}),
                "containerProperties.volumes[0].host.sourcePath \"/x:y\" must not contain",
            ),
            (
                json!({"volumes": [{"name": "a"}], "mountPoints": [{"sourceVolume": "a", "containerPath": "/a"}],
                       "linuxParameters": {"tmpfs": [{"containerPath": "/a", "size": 1}]}}),
                "containerProperties.linuxParameters.tmpfs[0].containerPath \"/a\" is mounted twice",
            ),
        ];
        for (other, want) in cases {
            let err = host(other.clone()).unwrap_err();
            assert!(err.starts_with(want), "{other}: {err}");
        }
    }

    #[test]
    fn a_spec_without_host_settings_still_reads() {
        let h: ContainerHost = serde_json::from_value(json!({})).unwrap();
        assert_eq!(h, ContainerHost::default());
    }
}
