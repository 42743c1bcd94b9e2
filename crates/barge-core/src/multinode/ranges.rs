//! Node ranges (`targetNodes`) and how a submission's nodes find their container: the checks
//! of a definition's nodeProperties and AWS's nodeOverrides rules.

use super::*;

/// A parsed `targetNodes`: `first..=last`; `last` None is an open end (`n:` or `:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetNodes {
    pub first: u32,
    pub last: Option<u32>,
}

impl TargetNodes {
    /// The nodes it names in a job of `num_nodes` nodes, or why it names none that exist.
    pub fn resolve(self, num_nodes: u32) -> Result<(u32, u32), String> {
        if self.first >= num_nodes {
            return Err(format!(
                "starts at node {} but the job has {num_nodes} node(s), 0 to {}",
                self.first,
                num_nodes - 1
            ));
        }
        match self.last {
            None => Ok((self.first, num_nodes - 1)),
            Some(last) if last >= num_nodes => Err(format!(
                "reaches node {last} but the job has {num_nodes} node(s), 0 to {}",
                num_nodes - 1
            )),
            Some(last) => Ok((self.first, last)),
        }
    }
}

/// Parses AWS's node range forms: `4`, `0:3`, `:3` (from 0), `2:` (to the last node), `:`.
pub fn parse_target_nodes(s: &str) -> Result<TargetNodes, String> {
    let index = |part: &str| -> Result<u32, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{s:?} is not a node range; use forms like \"0:3\", \":3\", \"2:\" or \"4\""
            ));
        }
        match part.parse::<u32>() {
            Ok(n) if n < MULTINODE_NODES_MAX => Ok(n),
            _ => Err(format!(
                "{s:?} names node {part}, but a job has at most {MULTINODE_NODES_MAX} nodes (0 to {})",
                MULTINODE_NODES_MAX - 1
            )),
        }
    };
    match s.split_once(':') {
        None => {
            let n = index(s)?;
            Ok(TargetNodes {
                first: n,
                last: Some(n),
            })
        }
        Some((a, b)) => {
            let first = if a.is_empty() { 0 } else { index(a)? };
            let last = if b.is_empty() { None } else { Some(index(b)?) };
            if last.is_some_and(|l| l < first) {
                return Err(format!("{s:?} ends before it starts"));
            }
            Ok(TargetNodes { first, last })
        }
    }
}

fn check_count(field: &str, v: i64) -> Result<u32, String> {
    if v < 1 || v > i64::from(MULTINODE_NODES_MAX) {
        return Err(format!(
            "{field} must be between 1 and {MULTINODE_NODES_MAX}, got {v}"
        ));
    }
    Ok(v as u32)
}

/// The checks that need nothing but the definition's nodeProperties: numNodes, mainNode, the
/// number of ranges, each targetNodes, that ranges nest or stay apart, that together they
/// cover every node, and that each range has a container with an image. Errors name the
/// member (`nodeProperties.nodeRangeProperties[1].targetNodes`).
pub fn check_node_properties(np: &NodeProperties) -> Result<(), String> {
    let n = check_count("nodeProperties.numNodes", np.num_nodes)?;
    if np.main_node < 0 || np.main_node >= i64::from(n) {
        return Err(format!(
            "nodeProperties.mainNode must be a node index from 0 to {} (less than nodeProperties.numNodes), got {}",
            n - 1,
            np.main_node
        ));
    }
    let ranges = &np.node_range_properties;
    if ranges.is_empty() || ranges.len() > MULTINODE_NODE_RANGES_MAX {
        return Err(format!(
            "nodeProperties.nodeRangeProperties must list 1 to {MULTINODE_NODE_RANGES_MAX} node ranges, got {}",
            ranges.len()
        ));
    }
    let mut resolved = Vec::with_capacity(ranges.len());
    for (i, r) in ranges.iter().enumerate() {
        let field = format!("nodeProperties.nodeRangeProperties[{i}]");
        let span = parse_target_nodes(&r.target_nodes)
            .and_then(|t| t.resolve(n))
            .map_err(|e| format!("{field}.targetNodes {e}"))?;
        let Some(c) = &r.container else {
            return Err(format!(
                "{field}.container is required: Barge runs each node range from its container (ecsProperties and eksProperties are not supported)"
            ));
        };
        if c.image.as_deref().is_none_or(str::is_empty) {
            return Err(format!("Missing required member {field}.container.image"));
        }
        for (j, earlier) in resolved.iter().enumerate() {
            check_nesting(ranges, (i, span), (j, *earlier))?;
        }
        resolved.push(span);
    }
    if let Some(gap) = (0..n).find(|k| !resolved.iter().any(|(a, b)| a <= k && k <= b)) {
        return Err(format!(
            "nodeProperties.nodeRangeProperties leave node {gap} without a range; together the ranges must cover nodes 0 to {}",
            n - 1
        ));
    }
    Ok(())
}

/// Two ranges must nest (one inside the other, the narrower wins) or not meet at all.
fn check_nesting(
    ranges: &[NodeRangeProperty],
    (i, (a, b)): (usize, (u32, u32)),
    (j, (c, d)): (usize, (u32, u32)),
) -> Result<(), String> {
    let here = format!(
        "nodeProperties.nodeRangeProperties[{i}].targetNodes {:?}",
        ranges[i].target_nodes
    );
    let there = format!(
        "nodeProperties.nodeRangeProperties[{j}].targetNodes {:?}",
        ranges[j].target_nodes
    );
    if (a, b) == (c, d) {
        return Err(format!(
            "{here} names the same nodes as {there}; give each node range distinct nodes"
        ));
    }
    let disjoint = b < c || d < a;
    let nested = (c <= a && b <= d) || (a <= c && d <= b);
    if !disjoint && !nested {
        return Err(format!(
            "{here} overlaps {there} without one holding the other; node ranges must nest (e.g. 0:10 and 4:5, where 4:5 wins) or not overlap"
        ));
    }
    Ok(())
}

/// The index, among `spans`, of the narrowest one holding `node` (ties: the later one).
fn narrowest(spans: &[(u32, u32)], node: u32) -> Option<usize> {
    spans
        .iter()
        .enumerate()
        .filter(|(_, (a, b))| *a <= node && node <= *b)
        .min_by_key(|(i, (a, b))| (b - a, std::cmp::Reverse(*i)))
        .map(|(i, _)| i)
}

/// One run of consecutive nodes that share a definition range and the same overrides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub first: u32,
    pub last: u32,
    /// Index into the definition's nodeRangeProperties.
    pub range: usize,
    /// Indexes into nodePropertyOverrides, applied in this order (widest first, so a narrower
    /// override wins, as a narrower range does).
    pub overrides: Vec<usize>,
}

/// The effective size and main node of a submission, and the runs of nodes that share a
/// container, after AWS's nodeOverrides rules:
/// - `numNodes` needs a definition range with an open end (`n:` or `:`), whose start, like
///   mainNode, must lie below the new count; a closed range may not reach past the last node.
/// - each override's targetNodes must name nodes of the job.
pub fn segments(
    np: &NodeProperties,
    overrides: Option<&NodeOverrides>,
) -> Result<(u32, u32, Vec<Segment>), String> {
    check_node_properties(np)?;
    let def_n = np.num_nodes as u32;
    let main = np.main_node as u32;
    let targets: Vec<TargetNodes> = np
        .node_range_properties
        .iter()
        .map(|r| parse_target_nodes(&r.target_nodes).expect("checked above"))
        .collect();
    let n = match overrides.and_then(|o| o.num_nodes) {
        None => def_n,
        Some(v) => {
            let n = check_count("nodeOverrides.numNodes", v)?;
            if targets.iter().all(|t| t.last.is_some()) {
                return Err("nodeOverrides.numNodes needs a node range with an open end (\"n:\" or \":\") in the job definition, and none of its nodeRangeProperties has one".into());
            }
            if main >= n {
                return Err(format!(
                    "nodeOverrides.numNodes {n} leaves no node {main}, the definition's mainNode; give at least {}",
                    main + 1
                ));
            }
            for (i, t) in targets.iter().enumerate() {
                t.resolve(n).map_err(|e| {
                    format!(
                        "nodeOverrides.numNodes {n} does not fit the definition: nodeProperties.nodeRangeProperties[{i}].targetNodes {:?} {e}",
                        np.node_range_properties[i].target_nodes
                    )
                })?;
            }
            n
        }
    };
    let spans: Vec<(u32, u32)> = targets
        .iter()
        .map(|t| t.resolve(n).expect("checked above"))
        .collect();
    let list = overrides
        .and_then(|o| o.node_property_overrides.as_deref())
        .unwrap_or_default();
    if list.len() > MULTINODE_NODE_OVERRIDES_MAX {
        return Err(format!(
            "nodeOverrides.nodePropertyOverrides has {} entries; at most {MULTINODE_NODE_OVERRIDES_MAX} are allowed",
            list.len()
        ));
    }
    let mut override_spans = Vec::with_capacity(list.len());
    for (i, o) in list.iter().enumerate() {
        let span = parse_target_nodes(&o.target_nodes)
            .and_then(|t| t.resolve(n))
            .map_err(|e| format!("nodeOverrides.nodePropertyOverrides[{i}].targetNodes {e}"))?;
        override_spans.push(span);
    }
    // Every node where some range or override starts or ends past its predecessor starts a
    // new segment; between two such boundaries all nodes are alike.
    let mut cuts: Vec<u32> = vec![0];
    for (a, b) in spans.iter().chain(override_spans.iter()) {
        cuts.push(*a);
        if b + 1 < n {
            cuts.push(b + 1);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out: Vec<Segment> = Vec::with_capacity(cuts.len());
    for (k, first) in cuts.iter().enumerate() {
        let last = cuts.get(k + 1).map_or(n - 1, |next| next - 1);
        let range = narrowest(&spans, *first).expect("the ranges cover every node");
        let mut ov: Vec<usize> = (0..override_spans.len())
            .filter(|i| override_spans[*i].0 <= *first && *first <= override_spans[*i].1)
            .collect();
        ov.sort_by_key(|i| {
            (
                std::cmp::Reverse(override_spans[*i].1 - override_spans[*i].0),
                *i,
            )
        });
        out.push(Segment {
            first: *first,
            last,
            range,
            overrides: ov,
        });
    }
    Ok((n, main, out))
}
