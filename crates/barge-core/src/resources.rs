//! Turning AWS's resource fields (strings in resourceRequirements, the deprecated vcpus and
//! memory) into the units the scheduler counts, and the fit rules shared by the scheduler, the
//! applier and the waiting-reason diagnosis.

use crate::command::CoreError;
use crate::limits::{DEFAULT_MEMORY_MIB, DEFAULT_VCPUS_MILLI, MEMORY_MIB_MIN};
use crate::model::{
    Agent, ComputeEnvironment, ContainerProperties, ResourceRequirement, Resources,
};

fn requirement<'a>(reqs: &'a Option<Vec<ResourceRequirement>>, kind: &str) -> Option<&'a str> {
    reqs.as_ref()?
        .iter()
        .find(|r| r.kind == kind)
        .map(|r| r.value.as_str())
}

/// Parses "2", "0.25" into thousandths of a vCPU.
pub fn parse_vcpus_milli(value: &str) -> Result<u32, CoreError> {
    let bad = || {
        CoreError::Invalid(format!(
            "resourceRequirements VCPU value {value:?} is not a positive number of vCPUs (e.g. \"1\" or \"0.25\")"
        ))
    };
    let v: f64 = value.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 || v > 1_000_000.0 {
        return Err(bad());
    }
    let milli = (v * 1000.0).round() as u32;
    if milli == 0 {
        return Err(bad());
    }
    Ok(milli)
}

pub fn parse_memory_mib(value: &str) -> Result<u64, CoreError> {
    match value.trim().parse::<u64>() {
        Ok(v) if v >= MEMORY_MIB_MIN => Ok(v),
        _ => Err(CoreError::Invalid(format!(
            "resourceRequirements MEMORY value {value:?} is not a whole number of MiB of at least {MEMORY_MIB_MIN}"
        ))),
    }
}

pub fn parse_gpus(value: &str) -> Result<u32, CoreError> {
    value.trim().parse::<u32>().map_err(|_| {
        CoreError::Invalid(format!(
            "resourceRequirements GPU value {value:?} is not a whole number of GPUs"
        ))
    })
}

/// Checks every requirement's type and value; used when a definition is registered and when
/// overrides arrive, so a bad value is refused up front rather than at placement.
pub fn check_requirements(reqs: &Option<Vec<ResourceRequirement>>) -> Result<(), CoreError> {
    let mut seen = Vec::new();
    for r in reqs.iter().flatten() {
        if seen.contains(&r.kind.as_str()) {
            return Err(CoreError::Invalid(format!(
                "resourceRequirements lists type {} more than once",
                r.kind
            )));
        }
        seen.push(r.kind.as_str());
        match r.kind.as_str() {
            "VCPU" => drop(parse_vcpus_milli(&r.value)?),
            "MEMORY" => drop(parse_memory_mib(&r.value)?),
            "GPU" => drop(parse_gpus(&r.value)?),
            other => {
                return Err(CoreError::Invalid(format!(
                    "resourceRequirements type {other:?} is not one of GPU, VCPU, MEMORY"
                )))
            }
        }
    }
    Ok(())
}

/// The resources a container asks for: resourceRequirements first, then the deprecated
/// vcpus/memory, then Barge's defaults.
pub fn resources_of(container: &ContainerProperties) -> Result<Resources, CoreError> {
    let reqs = &container.resource_requirements;
    let vcpus_milli = match (requirement(reqs, "VCPU"), container.vcpus) {
        (Some(v), _) => parse_vcpus_milli(v)?,
        (None, Some(v)) if v > 0 => (v as u32).saturating_mul(1000),
        (None, Some(v)) => {
            return Err(CoreError::Invalid(format!(
                "vcpus must be at least 1, got {v}"
            )))
        }
        (None, None) => DEFAULT_VCPUS_MILLI,
    };
    let memory_mib = match (requirement(reqs, "MEMORY"), container.memory) {
        (Some(v), _) => parse_memory_mib(v)?,
        (None, Some(v)) if v >= MEMORY_MIB_MIN as i64 => v as u64,
        (None, Some(v)) => {
            return Err(CoreError::Invalid(format!(
                "memory must be at least {MEMORY_MIB_MIN} MiB, got {v}"
            )))
        }
        (None, None) => DEFAULT_MEMORY_MIB,
    };
    let gpus = match requirement(reqs, "GPU") {
        Some(v) => parse_gpus(v)?,
        None => 0,
    };
    Ok(Resources {
        vcpus_milli,
        memory_mib,
        gpus,
    })
}

/// Whether an environment's vCPU bound leaves room for `res` given what it already uses.
pub fn ce_has_room(ce: &ComputeEnvironment, used_vcpus_milli: u64, res: Resources) -> bool {
    match ce.max_vcpus_milli() {
        Some(max) => used_vcpus_milli + u64::from(res.vcpus_milli) <= max,
        None => true,
    }
}

/// Whether an agent has `res` free now. GPUs are not counted until the Docker runner exists,
/// so a GPU job only fits on an agent that reports GPUs (none do yet).
pub fn agent_has_room(agent: &Agent, res: Resources) -> bool {
    agent.free_gpus() >= res.gpus
        && agent.free_vcpus_milli() >= u64::from(res.vcpus_milli)
        && agent.free_memory_mib() >= res.memory_mib
}

/// Whether `res` could ever fit an agent of this size, were it idle.
pub fn agent_could_fit(agent: &Agent, res: Resources) -> bool {
    agent.gpus >= res.gpus
        && agent.vcpus_milli >= u64::from(res.vcpus_milli)
        && agent.memory_mib >= res.memory_mib
}

/// "1", "0.25": vCPUs as AWS prints them.
pub fn format_vcpus(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{}", milli / 1000)
    } else {
        let s = format!("{:.3}", milli as f64 / 1000.0);
        s.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus_parse_fractions_and_refuse_nonsense() {
        assert_eq!(parse_vcpus_milli("2").unwrap(), 2000);
        assert_eq!(parse_vcpus_milli("0.25").unwrap(), 250);
        assert!(parse_vcpus_milli("0").is_err());
        assert!(parse_vcpus_milli("-1").is_err());
        assert!(parse_vcpus_milli("two").is_err());
        assert!(parse_vcpus_milli("NaN").is_err());
        assert_eq!(format_vcpus(250), "0.25");
        assert_eq!(format_vcpus(2000), "2");
    }

    #[test]
    fn requirements_win_over_deprecated_fields() {
        let c = ContainerProperties {
            vcpus: Some(4),
            memory: Some(100),
            resource_requirements: Some(vec![ResourceRequirement {
                kind: "VCPU".into(),
                value: "1".into(),
            }]),
            ..Default::default()
        };
        let r = resources_of(&c).unwrap();
        assert_eq!((r.vcpus_milli, r.memory_mib), (1000, 100));
        let d = resources_of(&ContainerProperties::default()).unwrap();
        assert_eq!(
            (d.vcpus_milli, d.memory_mib),
            (DEFAULT_VCPUS_MILLI, DEFAULT_MEMORY_MIB)
        );
    }
}
