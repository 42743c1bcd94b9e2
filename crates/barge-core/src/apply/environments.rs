//! Compute environments: create, update (AWS's vCPU rules), delete.

use super::*;

pub(super) fn find_ce_name(state: &State, reference: &str) -> Result<String, CoreError> {
    name_from_reference(reference, ResourceKind::ComputeEnvironment)
        .filter(|n| state.compute_environments.contains_key(*n))
        .map(str::to_string)
        .ok_or_else(|| {
            CoreError::NotFound(format!("compute environment {reference} does not exist"))
        })
}

pub(super) fn check_vcpu_bounds(min: i64, max: i64, desired: i64) -> Result<(), CoreError> {
    if min < 0 || max < 0 || desired < 0 {
        return Err(CoreError::Invalid(
            "minvCpus, maxvCpus and desiredvCpus must not be negative".into(),
        ));
    }
    if min > max {
        return Err(CoreError::Invalid(format!(
            "minvCpus ({min}) must not be greater than maxvCpus ({max})"
        )));
    }
    if desired < min || desired > max {
        return Err(CoreError::Invalid(format!(
            "desiredvCpus ({desired}) must lie between minvCpus ({min}) and maxvCpus ({max})"
        )));
    }
    Ok(())
}

pub(super) fn create_compute_environment(
    state: &mut State,
    mut ce: ComputeEnvironment,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if state.compute_environments.contains_key(&ce.name) {
        return Err(CoreError::Conflict(format!(
            "compute environment {} already exists",
            ce.name
        )));
    }
    if state.compute_environments.len() >= COMPUTE_ENVIRONMENTS_MAX {
        return Err(CoreError::LimitExceeded(format!(
            "Barge holds at most {COMPUTE_ENVIRONMENTS_MAX} compute environments; delete one first"
        )));
    }
    check_tags(&ce.tags)?;
    match ce.kind {
        ComputeEnvironmentType::Managed => {
            let Some(res) = ce.compute_resources.as_mut() else {
                return Err(CoreError::Invalid(
                    "computeResources is required for a MANAGED compute environment".into(),
                ));
            };
            if ce.unmanaged_vcpus.is_some() {
                return Err(CoreError::Invalid(
                    "unmanagedvCpus applies only to UNMANAGED compute environments".into(),
                ));
            }
            let max = res.max_vcpus.ok_or_else(|| {
                CoreError::Invalid("computeResources.maxvCpus is required".into())
            })?;
            let min = res.min_vcpus.unwrap_or(0);
            let desired = res.desired_vcpus.unwrap_or(min);
            check_vcpu_bounds(min, max, desired)?;
            let fargate = res
                .kind
                .as_deref()
                .is_some_and(|k| k.starts_with("FARGATE"));
            if !fargate {
                res.min_vcpus = Some(min);
                res.desired_vcpus = Some(desired);
            }
        }
        ComputeEnvironmentType::Unmanaged => {
            if ce.compute_resources.is_some() {
                return Err(CoreError::Invalid(
                    "computeResources applies only to MANAGED compute environments; an UNMANAGED one gets its capacity from the agents that join it".into(),
                ));
            }
            if ce.unmanaged_vcpus.is_some_and(|v| v < 0) {
                return Err(CoreError::Invalid(
                    "unmanagedvCpus must not be negative".into(),
                ));
            }
        }
    }
    crate::scaling::check_environment(&state.config.scaling, &ce)?;
    put_compute_environment(state, ce, changes)
}

pub(super) fn update_compute_environment(
    state: &mut State,
    u: ComputeEnvironmentUpdate,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_ce_name(state, &u.reference)?;
    let mut ce = (**state.compute_environments.get(&name).expect("found above")).clone();
    if let Some(s) = u.state {
        ce.state = s;
    }
    let touches_resources = u.min_vcpus.is_some()
        || u.max_vcpus.is_some()
        || u.desired_vcpus.is_some()
        || !u.compute_resources_other.is_empty();
    if touches_resources {
        let Some(res) = ce.compute_resources.as_mut() else {
            return Err(CoreError::Invalid(format!(
                "compute environment {name} is UNMANAGED and has no computeResources to update"
            )));
        };
        if res
            .kind
            .as_deref()
            .is_some_and(|k| k.starts_with("FARGATE"))
            && u.desired_vcpus.is_some()
        {
            return Err(CoreError::Invalid(
                "desiredvCpus cannot be set on a Fargate compute environment".into(),
            ));
        }
        let min = u.min_vcpus.or(res.min_vcpus).unwrap_or(0);
        let max = u.max_vcpus.or(res.max_vcpus).unwrap_or(0);
        let current_desired = res.desired_vcpus.unwrap_or(min);
        let desired = match u.desired_vcpus {
            Some(d) => {
                if d < current_desired {
                    return Err(CoreError::Invalid(format!(
                        "desiredvCpus cannot be decreased (current {current_desired}, requested {d}); AWS Batch lowers it itself as demand falls"
                    )));
                }
                d
            }
            None => current_desired.clamp(min.min(max), max.max(min)),
        };
        check_vcpu_bounds(min, max, desired)?;
        if res.min_vcpus.is_some() || u.min_vcpus.is_some() {
            res.min_vcpus = Some(min);
        }
        res.max_vcpus = Some(max);
        if res.desired_vcpus.is_some() || u.desired_vcpus.is_some() {
            res.desired_vcpus = Some(desired);
        }
        let new_types = u.compute_resources_other.contains_key("instanceTypes");
        for (k, v) in u.compute_resources_other {
            res.other.insert(k, v);
        }
        if new_types {
            crate::scaling::check_environment(&state.config.scaling, &ce)?;
        }
    }
    if let Some(v) = u.unmanaged_vcpus {
        if ce.kind != ComputeEnvironmentType::Unmanaged {
            return Err(CoreError::Invalid(
                "unmanagedvCpus applies only to UNMANAGED compute environments".into(),
            ));
        }
        if v < 0 {
            return Err(CoreError::Invalid(
                "unmanagedvCpus must not be negative".into(),
            ));
        }
        ce.unmanaged_vcpus = Some(v);
    }
    if let Some(role) = u.service_role {
        ce.service_role = Some(role);
    }
    if let Some(p) = u.update_policy {
        ce.update_policy = Some(p);
    }
    put_compute_environment(state, ce, changes)
}

pub(super) fn delete_compute_environment(
    state: &mut State,
    reference: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = find_ce_name(state, reference)?;
    if state.compute_environments[&name].state != ResourceState::Disabled {
        return Err(CoreError::Conflict(format!(
            "compute environment {name} is ENABLED; disable it (update-compute-environment --state DISABLED) before deleting it"
        )));
    }
    let users: Vec<&str> = state
        .job_queues
        .values()
        .filter(|q| {
            q.compute_environment_order
                .iter()
                .any(|o| o.compute_environment == name)
        })
        .map(|q| q.name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(CoreError::Conflict(format!(
            "compute environment {name} is still attached to job queue(s) {}; remove it from their computeEnvironmentOrder first",
            users.join(", ")
        )));
    }
    state.compute_environments.remove(&name);
    changes.dirty.push(Key::ComputeEnvironment(name));
    Ok(Reply::Done)
}

/// Stores a created or updated environment and records the change.
fn put_compute_environment(
    state: &mut State,
    ce: ComputeEnvironment,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let name = ce.name.clone();
    state
        .compute_environments
        .insert(name.clone(), Arc::new(ce));
    changes.dirty.push(Key::ComputeEnvironment(name.clone()));
    changes.schedule = true;
    Ok(Reply::ComputeEnvironment { name })
}
