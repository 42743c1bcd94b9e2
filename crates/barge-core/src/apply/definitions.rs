//! Job definitions: register (revisions), resolve a reference, deregister.

use super::*;

pub(super) fn check_environment(
    env: &Option<Vec<KeyValuePair>>,
    field: &str,
) -> Result<(), CoreError> {
    for kv in env.iter().flatten() {
        let name = kv.name.as_deref().unwrap_or("");
        if name.is_empty() {
            return Err(CoreError::Invalid(format!(
                "{field} has an entry without a name"
            )));
        }
        if name.starts_with("AWS_BATCH") {
            return Err(CoreError::Invalid(format!(
                "{field} variable {name} uses the reserved prefix AWS_BATCH; rename it"
            )));
        }
    }
    Ok(())
}

pub(super) fn register_job_definition(
    state: &mut State,
    mut d: JobDefinition,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    if let Some(c) = &d.container_properties {
        check_environment(&c.environment, "containerProperties.environment")?;
        check_requirements(&c.resource_requirements)?;
        resources_of(c)?;
    }
    if d.kind == "multinode" {
        let Some(np) = &d.node_properties else {
            return Err(CoreError::Invalid(
                "nodeProperties is required for a job definition of type multinode".into(),
            ));
        };
        if d.container_properties.is_some() {
            return Err(CoreError::Invalid(
                "containerProperties applies only to type container; a multinode definition gives each node range its container in nodeProperties".into(),
            ));
        }
        multinode::check_definition(np)?;
    } else if d.node_properties.is_some() {
        return Err(CoreError::Invalid(
            "nodeProperties applies only to type multinode".into(),
        ));
    }
    d.revision = state.latest_revision(&d.name) + 1;
    d.status = DefinitionStatus::Active;
    let reply = Reply::JobDefinition {
        name: d.name.clone(),
        revision: d.revision,
    };
    put_job_definition(state, d, changes);
    Ok(reply)
}

/// `name`, `name:revision`, or an ARN with or without `:revision`. A bare name means the
/// latest ACTIVE revision.
pub(super) fn resolve_definition(
    state: &State,
    reference: &str,
) -> Result<Arc<JobDefinition>, CoreError> {
    let not_found = || CoreError::NotFound(format!("job definition {reference} does not exist"));
    let spec = name_from_reference(reference, ResourceKind::JobDefinition).ok_or_else(not_found)?;
    match spec.rsplit_once(':') {
        Some((name, rev)) => {
            let rev: u32 = rev.parse().map_err(|_| {
                CoreError::Invalid(format!(
                    "job definition {reference}: revision {rev:?} is not a number"
                ))
            })?;
            state
                .job_definitions
                .get(&(name.to_string(), rev))
                .cloned()
                .ok_or_else(not_found)
        }
        None => state
            .latest_active_definition(spec)
            .cloned()
            .ok_or_else(|| {
                if state.latest_revision(spec) > 0 {
                    CoreError::NotFound(format!(
                        "job definition {spec} has no ACTIVE revision; register a new one"
                    ))
                } else {
                    not_found()
                }
            }),
    }
}

pub(super) fn deregister_job_definition(
    state: &mut State,
    reference: &str,
    changes: &mut Changes,
) -> Result<Reply, CoreError> {
    let spec = name_from_reference(reference, ResourceKind::JobDefinition).unwrap_or(reference);
    if !spec.contains(':') {
        return Err(CoreError::Invalid(format!(
            "jobDefinition {reference}: give name:revision or the full ARN of the revision to deregister"
        )));
    }
    let d = resolve_definition(state, reference)?;
    let mut d = (*d).clone();
    d.status = DefinitionStatus::Inactive;
    put_job_definition(state, d, changes);
    Ok(Reply::Done)
}

/// Stores a registered or changed revision and records the change.
fn put_job_definition(state: &mut State, d: JobDefinition, changes: &mut Changes) {
    changes
        .dirty
        .push(Key::JobDefinition(d.name.clone(), d.revision));
    state
        .job_definitions
        .insert((d.name.clone(), d.revision), Arc::new(d));
}
