//! Scheduling policies: Create, Update, Delete, Describe and List (fair share only).

use barge_core::arn::{name_from_reference, ResourceKind};
use barge_core::fairshare::check_policy;
use barge_core::limits::DESCRIBE_PAGE_ITEMS_MAX;
use barge_core::model::*;
use barge_core::{Command, Reply, State};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::wire::*;
use crate::Backend;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ShareAttributesInput {
    share_identifier: String,
    weight_factor: Option<f64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FairsharePolicyInput {
    share_decay_seconds: Option<i64>,
    compute_reservation: Option<i64>,
    #[serde(default)]
    share_distribution: Vec<ShareAttributesInput>,
}

/// Turns the wire shape into the core's, checking AWS's rules. Weights are kept to AWS's
/// resolution, 0.0001.
fn fairshare_policy(i: FairsharePolicyInput) -> Result<FairsharePolicy, ApiError> {
    let mut share_distribution = Vec::with_capacity(i.share_distribution.len());
    for (n, e) in i.share_distribution.into_iter().enumerate() {
        let weight_factor_e4 = match e.weight_factor {
            None => None,
            Some(w) if (0.0001..=999.9999).contains(&w) => Some((w * 1e4).round() as u32),
            Some(w) => {
                return Err(ApiError::client(format!(
                    "fairsharePolicy.shareDistribution[{n}].weightFactor must be between 0.0001 and 999.9999, got {w}"
                )))
            }
        };
        share_distribution.push(ShareWeight {
            share_identifier: e.share_identifier,
            weight_factor_e4,
        });
    }
    let p = FairsharePolicy {
        share_decay_seconds: i.share_decay_seconds,
        compute_reservation: i.compute_reservation,
        share_distribution,
    };
    check_policy(&p).map_err(ApiError::client)?;
    Ok(p)
}

fn refuse_quota_share(v: &Option<Value>) -> Result<(), ApiError> {
    match v {
        Some(_) => Err(ApiError::client(
            "quotaSharePolicy is not supported by this version of Barge (quota shares belong to SageMaker service environments); use fairsharePolicy",
        )),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateInput {
    name: String,
    fairshare_policy: Option<FairsharePolicyInput>,
    quota_share_policy: Option<Value>,
    #[serde(default)]
    tags: Tags,
}

pub async fn create<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: CreateInput = parse(body)?;
    check_name("name", &i.name)?;
    refuse_quota_share(&i.quota_share_policy)?;
    check_tags("tags", &i.tags)?;
    let policy = SchedulingPolicy {
        name: i.name,
        fairshare_policy: i.fairshare_policy.map(fairshare_policy).transpose()?,
        tags: i.tags,
    };
    let Reply::SchedulingPolicy { name } =
        b.execute(Command::CreateSchedulingPolicy(policy)).await?
    else {
        return Err(ApiError::server(
            "unexpected reply to CreateSchedulingPolicy",
        ));
    };
    let arn = b.snapshot().identity.scheduling_policy_arn(&name);
    Ok(json!({ "name": name, "arn": arn }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateInput {
    arn: String,
    fairshare_policy: Option<FairsharePolicyInput>,
    quota_share_policy: Option<Value>,
}

pub async fn update<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: UpdateInput = parse(body)?;
    non_empty("arn", &i.arn)?;
    refuse_quota_share(&i.quota_share_policy)?;
    b.execute(Command::UpdateSchedulingPolicy {
        reference: i.arn,
        fairshare_policy: i.fairshare_policy.map(fairshare_policy).transpose()?,
    })
    .await?;
    Ok(json!({}))
}

#[derive(Deserialize)]
struct DeleteInput {
    arn: String,
}

pub async fn delete<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DeleteInput = parse(body)?;
    non_empty("arn", &i.arn)?;
    b.execute(Command::DeleteSchedulingPolicy { reference: i.arn })
        .await?;
    Ok(json!({}))
}

/// AWS's SchedulingPolicyDetail.
pub fn render(state: &State, p: &SchedulingPolicy) -> Value {
    let fairshare = p.fairshare_policy.as_ref().map(|f| {
        let distribution: Vec<Value> = f
            .share_distribution
            .iter()
            .map(|e| {
                json!({
                    "shareIdentifier": e.share_identifier,
                    "weightFactor": e.weight_factor_e4.map(|w| f64::from(w) / 1e4),
                })
            })
            .collect();
        json!({
            "shareDecaySeconds": f.share_decay_seconds,
            "computeReservation": f.compute_reservation,
            "shareDistribution": (!distribution.is_empty()).then_some(distribution),
        })
    });
    compact(json!({
        "name": p.name,
        "arn": state.identity.scheduling_policy_arn(&p.name),
        "fairsharePolicy": fairshare,
        "tags": p.tags,
    }))
}

#[derive(Deserialize)]
struct DescribeInput {
    arns: Vec<String>,
}

pub fn describe<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: DescribeInput = parse(body)?;
    if i.arns.len() > DESCRIBE_PAGE_ITEMS_MAX {
        return Err(ApiError::client(format!(
            "arns lists {} entries; at most {DESCRIBE_PAGE_ITEMS_MAX} are allowed",
            i.arns.len()
        )));
    }
    let state = b.snapshot();
    // As for the other Describe operations, unknown references are left out, not errors.
    let mut seen = Vec::new();
    let policies: Vec<Value> = i
        .arns
        .iter()
        .filter_map(|r| name_from_reference(r, ResourceKind::SchedulingPolicy))
        .filter(|n| {
            let first = !seen.contains(n);
            seen.push(*n);
            first
        })
        .filter_map(|n| state.scheduling_policies.get(n))
        .map(|p| render(&state, p))
        .collect();
    Ok(json!({ "schedulingPolicies": policies }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListInput {
    max_results: Option<i64>,
    next_token: Option<String>,
}

/// ListSchedulingPolicies: ARNs by name; the token is the first name of the next page.
pub fn list<B: Backend>(b: &B, body: &[u8]) -> Result<Value, ApiError> {
    let i: ListInput = parse(body)?;
    let size = page_size(
        "maxResults",
        i.max_results,
        DESCRIBE_PAGE_ITEMS_MAX,
        DESCRIBE_PAGE_ITEMS_MAX,
    )?;
    let token = decode_token(&i.next_token)?;
    let state = b.snapshot();
    let mut out = Vec::new();
    let mut next = None;
    let from = token.unwrap_or_default();
    for name in state.scheduling_policies.range(from..).map(|(n, _)| n) {
        if out.len() == size {
            next = Some(encode_token(name));
            break;
        }
        out.push(json!({ "arn": state.identity.scheduling_policy_arn(name) }));
    }
    Ok(compact(
        json!({ "schedulingPolicies": out, "nextToken": next }),
    ))
}
