//! Multi-node parallel (MNP) jobs: the shapes (nodeProperties, nodeOverrides), node ranges and
//! how a node finds its container, gang planning for the scheduler, and why a gang waits.
//! The lifecycle in the applier (placing a gang, launching, ending it) is `apply::multinode`.
//!
//! A multi-node job is one schedulable unit, the *parent*. When its gang is placed, every node
//! becomes a job row of its own, `<parent id>#<index>`, with its own attempt and log stream.
//! Decisions, and why:
//! - **Node ranges nest or stay apart.** AWS lets a narrower range override a wider one
//!   (`0:10` and `4:5`) and does not say what partial overlaps (`0:5` and `3:8`) mean, so
//!   Barge refuses those, and two ranges naming the same nodes, rather than guess. A node runs
//!   the container of the narrowest range that holds it.
//! - **Nodes of one job may share an agent.** AWS runs one node per instance; Barge books each
//!   node's own vCPUs and memory, so several nodes fit one big host (and `barge up`'s single
//!   local agent can run a multi-node job at all). Nodes are packed largest first, each on
//!   the agent it fits most tightly, all within one compute environment.
//! - **All or none.** A gang is placed only when every node fits at once, and the applier
//!   re-checks the whole gang when it commits. A new gang is never placed while a node of the
//!   previous one is still live.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::limits::{MULTINODE_NODES_MAX, MULTINODE_NODE_OVERRIDES_MAX, MULTINODE_NODE_RANGES_MAX};
use crate::model::*;
use crate::resources::format_vcpus;
use crate::state::State;

/// AWS's NodeProperties (job definitions). Numbers are kept as given and checked by
/// `check_node_properties`, so a bad value is answered with a message naming it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeProperties {
    pub num_nodes: i64,
    pub main_node: i64,
    pub node_range_properties: Vec<NodeRangeProperty>,
}

/// AWS's NodeRangeProperty. Members Barge does not act on (instanceTypes) are kept in `other`
/// and echoed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRangeProperty {
    pub target_nodes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerProperties>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// AWS's NodeOverrides (SubmitJob).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_nodes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_property_overrides: Option<Vec<NodePropertyOverride>>,
}

/// AWS's NodePropertyOverride. `other` holds instanceTypes and the members Barge refuses
/// (ecsPropertiesOverride, eksPropertiesOverride, consumableResourcePropertiesOverride).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePropertyOverride {
    pub target_nodes: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_overrides: Option<ContainerOverrides>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// What a multi-node parent job keeps: its size, its main node and its node groups with the
/// submit-time overrides applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultiNodeJob {
    pub num_nodes: u32,
    pub main_node: u32,
    /// Consecutive, in node order, covering 0..num_nodes: each node runs the group holding
    /// its index.
    pub groups: Vec<NodeGroup>,
}

/// Nodes `first..=last`, which run the same effective container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeGroup {
    pub first: u32,
    pub last: u32,
    pub container: ContainerProperties,
    pub resources: Resources,
}

impl MultiNodeJob {
    pub fn group_of(&self, index: u32) -> &NodeGroup {
        self.groups
            .iter()
            .find(|g| g.first <= index && index <= g.last)
            .expect("the groups cover every node")
    }

    pub fn resources_of(&self, index: u32) -> Resources {
        self.group_of(index).resources
    }

    /// vCPUs (thousandths) and MiB the whole gang books.
    pub fn total(&self) -> (u64, u64) {
        self.groups.iter().fold((0, 0), |(v, m), g| {
            let n = u64::from(g.last - g.first + 1);
            (
                v + n * u64::from(g.resources.vcpus_milli),
                m + n * g.resources.memory_mib,
            )
        })
    }
}

/// What a node job keeps about its place in the gang.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRef {
    pub parent_id: String,
    pub index: u32,
    pub is_main: bool,
    /// Whether the node's current attempt has been handed to its agent. Non-main nodes hold
    /// their placement from the gang's start but are launched once the main node runs.
    pub launched: bool,
}

/// A gang placement proposed by the scheduler: every node of one job, each on an agent of
/// one compute environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GangPlacement {
    pub job_id: String,
    pub compute_environment: String,
    /// One entry per node, in node order.
    pub nodes: Vec<NodePlacement>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlacement {
    pub index: u32,
    pub agent_id: String,
    pub attempt_id: String,
}

/// The id of node `index` of job `parent_id` (AWS: `<id>#<n>`).
pub fn node_id(parent_id: &str, index: u32) -> String {
    format!("{parent_id}#{index}")
}

/// Reads a stored definition's nodeProperties. Earlier versions of Barge stored whatever JSON
/// was registered; one that does not read as NodeProperties is dropped rather than making the
/// whole store unreadable (such a definition then answers "no nodeProperties" at submit).
pub fn lenient_node_properties<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<NodeProperties>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

mod gang;
mod ranges;
mod reasons;

pub use gang::*;
pub use ranges::*;
pub use reasons::*;

#[cfg(test)]
mod tests {
    use super::gang::nodes_that_fit;
    use super::*;

    fn range(t: &str) -> NodeRangeProperty {
        NodeRangeProperty {
            target_nodes: t.into(),
            container: Some(ContainerProperties {
                image: Some("busybox".into()),
                ..Default::default()
            }),
            other: Map::new(),
        }
    }

    fn props(n: i64, main: i64, ranges: &[&str]) -> NodeProperties {
        NodeProperties {
            num_nodes: n,
            main_node: main,
            node_range_properties: ranges.iter().map(|t| range(t)).collect(),
        }
    }

    #[test]
    fn target_nodes_forms() {
        let t = |s| parse_target_nodes(s).map(|t| t.resolve(6));
        assert_eq!(t("0:3"), Ok(Ok((0, 3))));
        assert_eq!(t(":3"), Ok(Ok((0, 3))));
        assert_eq!(t("2:"), Ok(Ok((2, 5))));
        assert_eq!(t(":"), Ok(Ok((0, 5))));
        assert_eq!(t("4"), Ok(Ok((4, 4))));
        assert!(t("0:9").unwrap().is_err());
        assert!(t("6:").unwrap().is_err());
        for bad in [
            "",
            "a",
            "1:a",
            "3:1",
            " 1",
            "1:2:3",
            "-1",
            "1000",
            "99999999999",
        ] {
            assert!(parse_target_nodes(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn ranges_must_cover_and_nest() {
        assert!(check_node_properties(&props(3, 0, &["0", "1:"])).is_ok());
        assert!(check_node_properties(&props(11, 0, &["0:10", "4:5"])).is_ok());
        let gap = check_node_properties(&props(4, 0, &["0", "2:"])).unwrap_err();
        assert!(gap.contains("node 1"), "{gap}");
        let overlap = check_node_properties(&props(9, 0, &["0:5", "3:8"])).unwrap_err();
        assert!(
            overlap.starts_with("nodeProperties.nodeRangeProperties[1].targetNodes"),
            "{overlap}"
        );
        let same = check_node_properties(&props(3, 0, &["0:2", ":"])).unwrap_err();
        assert!(same.contains("same nodes"), "{same}");
        let main = check_node_properties(&props(3, 3, &[":"])).unwrap_err();
        assert!(main.starts_with("nodeProperties.mainNode"), "{main}");
        assert!(check_node_properties(&props(0, 0, &[":"]))
            .unwrap_err()
            .starts_with("nodeProperties.numNodes"));
        assert!(check_node_properties(&props(1001, 0, &[":"])).is_err());
        let six = props(6, 0, &["0", "1", "2", "3", "4", "5"]);
        assert!(check_node_properties(&six)
            .unwrap_err()
            .contains("1 to 5 node ranges"));
    }

    #[test]
    fn the_narrowest_range_wins_and_overrides_split_groups() {
        let np = props(6, 0, &["0:5", "4:5"]);
        let (n, main, segs) = segments(&np, None).unwrap();
        assert_eq!((n, main), (6, 0));
        let runs: Vec<(u32, u32, usize)> =
            segs.iter().map(|s| (s.first, s.last, s.range)).collect();
        assert_eq!(runs, vec![(0, 3, 0), (4, 5, 1)]);
        let o = NodeOverrides {
            num_nodes: None,
            node_property_overrides: Some(vec![NodePropertyOverride {
                target_nodes: "3:4".into(),
                container_overrides: None,
                other: Map::new(),
            }]),
        };
        let (_, _, segs) = segments(&np, Some(&o)).unwrap();
        let runs: Vec<(u32, u32, usize, Vec<usize>)> = segs
            .iter()
            .map(|s| (s.first, s.last, s.range, s.overrides.clone()))
            .collect();
        assert_eq!(
            runs,
            vec![
                (0, 2, 0, vec![]),
                (3, 3, 0, vec![0]),
                (4, 4, 1, vec![0]),
                (5, 5, 1, vec![])
            ]
        );
    }

    #[test]
    fn num_nodes_overrides_follow_aws_rules() {
        let open = props(3, 0, &["0", "1:"]);
        let grow = NodeOverrides {
            num_nodes: Some(5),
            ..Default::default()
        };
        assert_eq!(segments(&open, Some(&grow)).unwrap().0, 5);
        let closed = props(3, 0, &["0", "1:2"]);
        let e = segments(&closed, Some(&grow)).unwrap_err();
        assert!(e.starts_with("nodeOverrides.numNodes"), "{e}");
        let shrink = NodeOverrides {
            num_nodes: Some(1),
            ..Default::default()
        };
        let e = segments(&open, Some(&shrink)).unwrap_err();
        assert!(e.contains("nodeRangeProperties[1]"), "{e}");
        let zero = NodeOverrides {
            num_nodes: Some(0),
            ..Default::default()
        };
        assert!(segments(&open, Some(&zero)).is_err());
    }

    #[test]
    fn stored_definitions_read_back_and_old_junk_does_not_break_the_store() {
        let d = JobDefinition {
            name: "d".into(),
            revision: 1,
            status: DefinitionStatus::Active,
            kind: "multinode".into(),
            parameters: Default::default(),
            scheduling_priority: None,
            container_properties: None,
            node_properties: Some(props(3, 0, &["0", "1:"])),
            retry_strategy: None,
            timeout: None,
            propagate_tags: None,
            platform_capabilities: None,
            tags: Tags::new(),
            other: Map::new(),
        };
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(
            json["node_properties"]["nodeRangeProperties"][1]["targetNodes"],
            "1:"
        );
        let back: JobDefinition = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, d);
        // Before nodeProperties was typed, any JSON was stored as given.
        let mut old = json;
        old["node_properties"] = serde_json::json!({"numNodes": "three"});
        let read: JobDefinition = serde_json::from_value(old).unwrap();
        assert_eq!(read.node_properties, None);
    }

    #[test]
    fn packing_is_all_or_nothing() {
        let r = |v: u32| Resources {
            vcpus_milli: v,
            memory_mib: 100,
            gpus: 0,
        };
        let needs = vec![(0, r(1000)), (1, r(1000)), (2, r(2000))];
        assert_eq!(
            pack(&needs, &[(2000, 1000), (2000, 1000)]),
            Some(vec![1, 1, 0])
        );
        assert_eq!(pack(&needs, &[(4000, 1000)]), Some(vec![0, 0, 0]));
        assert_eq!(pack(&needs, &[(3000, 1000)]), None);
        assert_eq!(nodes_that_fit(&needs, &[(3000, 1000)]), 2);
    }
}
