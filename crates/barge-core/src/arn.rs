//! AWS ARNs for Barge's resources, and parsing of the "name or ARN" references clients send.

use serde::{Deserialize, Serialize};

/// The region and account that appear in every ARN. Barge has one of each per installation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub region: String,
    pub account_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }
}

impl Identity {
    fn batch(&self, resource: &str) -> String {
        format!(
            "arn:aws:batch:{}:{}:{}",
            self.region, self.account_id, resource
        )
    }
    pub fn compute_environment_arn(&self, name: &str) -> String {
        self.batch(&format!("compute-environment/{name}"))
    }
    pub fn job_queue_arn(&self, name: &str) -> String {
        self.batch(&format!("job-queue/{name}"))
    }
    pub fn job_definition_arn(&self, name: &str, revision: u32) -> String {
        self.batch(&format!("job-definition/{name}:{revision}"))
    }
    pub fn scheduling_policy_arn(&self, name: &str) -> String {
        self.batch(&format!("scheduling-policy/{name}"))
    }
    /// A Barge schedule (AWS Batch has none; the same account and region as the rest).
    pub fn schedule_arn(&self, name: &str) -> String {
        self.batch(&format!("schedule/{name}"))
    }
    pub fn job_arn(&self, job_id: &str) -> String {
        self.batch(&format!("job/{job_id}"))
    }
    /// Barge has no ECS; the cluster ARN is reported because clients and consoles expect one.
    pub fn ecs_cluster_arn(&self, ce_name: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:cluster/{ce_name}_Batch",
            self.region, self.account_id
        )
    }
    /// The ECS task ARN AWS reports per attempt; the task id is Barge's attempt id.
    pub fn task_arn(&self, attempt_id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:task/barge/{attempt_id}",
            self.region, self.account_id
        )
    }
    /// The container instance ARN AWS reports per attempt; Barge's instance is its agent.
    pub fn container_instance_arn(&self, agent_id: &str) -> String {
        format!(
            "arn:aws:ecs:{}:{}:container-instance/barge/{agent_id}",
            self.region, self.account_id
        )
    }
}

/// The kinds of resource an ARN can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    ComputeEnvironment,
    JobQueue,
    JobDefinition,
    Job,
    SchedulingPolicy,
}

impl ResourceKind {
    fn prefix(self) -> &'static str {
        match self {
            ResourceKind::ComputeEnvironment => "compute-environment/",
            ResourceKind::JobQueue => "job-queue/",
            ResourceKind::JobDefinition => "job-definition/",
            ResourceKind::Job => "job/",
            ResourceKind::SchedulingPolicy => "scheduling-policy/",
        }
    }
}

/// Splits `arn:aws:batch:<region>:<account>:<kind>/<rest>` into its kind and rest.
/// Region and account are not checked: a client may have signed for another region.
pub fn parse_batch_arn(arn: &str) -> Option<(ResourceKind, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (
        Some("arn"),
        Some(_partition),
        Some("batch"),
        Some(_region),
        Some(_account),
        Some(resource),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return None;
    };
    [
        ResourceKind::ComputeEnvironment,
        ResourceKind::JobQueue,
        ResourceKind::JobDefinition,
        ResourceKind::Job,
        ResourceKind::SchedulingPolicy,
    ]
    .into_iter()
    .find_map(|kind| {
        resource
            .strip_prefix(kind.prefix())
            .map(|rest| (kind, rest))
    })
}

/// A reference given as a name or an ARN of `kind`. Returns the name part, or None when the
/// value is an ARN of another kind or malformed.
pub fn name_from_reference(reference: &str, kind: ResourceKind) -> Option<&str> {
    if reference.starts_with("arn:") {
        match parse_batch_arn(reference) {
            Some((k, rest)) if k == kind => Some(rest),
            _ => None,
        }
    } else {
        Some(reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns_round_trip() {
        let id = Identity::default();
        let arn = id.job_definition_arn("d", 3);
        assert_eq!(
            arn,
            "arn:aws:batch:us-east-1:000000000000:job-definition/d:3"
        );
        assert_eq!(
            parse_batch_arn(&arn),
            Some((ResourceKind::JobDefinition, "d:3"))
        );
        assert_eq!(
            name_from_reference(&id.job_queue_arn("q"), ResourceKind::JobQueue),
            Some("q")
        );
        assert_eq!(
            name_from_reference(&id.job_queue_arn("q"), ResourceKind::ComputeEnvironment),
            None
        );
        assert_eq!(
            name_from_reference("plain", ResourceKind::JobQueue),
            Some("plain")
        );
        assert_eq!(parse_batch_arn("arn:aws:s3:::bucket"), None);
    }
}
