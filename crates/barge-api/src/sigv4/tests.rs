//! The verifier against signatures it did not compute itself: AWS's documented examples,
//! signatures botocore produced for Barge's own request shapes, and a signer written here from
//! AWS's description of SigV4 (separately from the module's code). Then every part of a
//! signed request is changed in turn, and each change must be refused.

use std::collections::BTreeMap;

use super::*;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite, in epoch milliseconds.
const T_2015_08_30_123600_MS: i64 = 1_440_938_160_000;

fn keys() -> AccessKeys {
    let mut k = AccessKeys::default();
    k.insert(AKID, SECRET).unwrap();
    k.insert("AKIDOTHER", "other-secret").unwrap();
    k
}

fn headers_of(list: &[(&'static str, String)]) -> Vec<(&'static str, Vec<u8>)> {
    list.iter()
        .map(|(n, v)| (*n, v.as_bytes().to_vec()))
        .collect()
}

/// Runs `verify` on an owned request description.
#[allow(clippy::too_many_arguments)]
fn check(
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&'static str, Vec<u8>)],
    body: &[u8],
    region: &str,
    service: &str,
    now_ms: i64,
) -> Result<Verified, ApiError> {
    let borrowed: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let request = Request {
        method,
        path,
        query,
        headers: &borrowed,
        body,
    };
    verify(&request, &keys(), region, service, now_ms)
}

// ---- known answers ---------------------------------------------------------------------

#[test]
fn signing_key_matches_awss_documented_example() {
    // AWS's "deriving the signing key" example (IAM, us-east-1, 2012-02-15).
    assert_eq!(
        hex::encode(signing_key(SECRET, "20120215", "us-east-1", "iam")),
        "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
    );
}

#[test]
fn accepts_awss_get_vanilla_example() {
    // "get-vanilla" of AWS's SigV4 test suite.
    let headers = headers_of(&[
        ("host", "example.amazonaws.com".into()),
        ("x-amz-date", "20150830T123600Z".into()),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31".into()),
    ]);
    let ok = check(
        "GET",
        "/",
        "",
        &headers,
        b"",
        "us-east-1",
        "service",
        T_2015_08_30_123600_MS,
    );
    assert_eq!(ok.unwrap().access_key_id, AKID);
}

#[test]
fn accepts_botocore_signatures_of_a_tag_request_and_a_logs_request() {
    // Signed by botocore 1.4x's SigV4Auth at 2015-08-30T12:36:00Z: the ARN path is encoded
    // once on the wire and twice in the canonical URI, the query holds an encoded space.
    let tags = headers_of(&[
        ("host", "127.0.0.1:8433".into()),
        ("x-amz-date", "20150830T123600Z".into()),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/batch/aws4_request, SignedHeaders=host;x-amz-date, Signature=08e42b6921b38b29c1160dec2d14ecedc7aaf08af9df382ad0ce0746d61108db".into()),
    ]);
    let path = "/v1/tags/arn%3Aaws%3Abatch%3Aus-east-1%3A000000000000%3Ajob-queue%2Fq";
    let query = "tagKeys=a&tagKeys=b%20c";
    let at = T_2015_08_30_123600_MS;
    check("DELETE", path, query, &tags, b"", "us-east-1", "batch", at).unwrap();
    // Decoding the path before signing (a single encoding) must not verify.
    let decoded = "/v1/tags/arn:aws:batch:us-east-1:000000000000:job-queue%2Fq";
    let err = check(
        "DELETE",
        decoded,
        query,
        &tags,
        b"",
        "us-east-1",
        "batch",
        at,
    )
    .unwrap_err();
    assert_eq!(err.code, "InvalidSignatureException");

    let logs = headers_of(&[
        ("content-type", "application/x-amz-json-1.1".into()),
        ("x-amz-target", "Logs_20140328.DescribeLogGroups".into()),
        ("host", "127.0.0.1:8433".into()),
        ("x-amz-date", "20150830T123600Z".into()),
        ("content-length", "29".into()),
        ("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/logs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=68c948cf9050bf8650a471b37c55458deb069893e89beb7bbdd90281c9aae627".into()),
    ]);
    let body = br#"{"logGroupNamePrefix":"/aws"}"#;
    check("POST", "/", "", &logs, body, "us-east-1", "logs", at).unwrap();
}

// ---- a signer written from AWS's description, for round trips ---------------------------

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// "URI-encode every byte except the unreserved characters".
fn encode(s: &str, keep_slash: bool) -> String {
    s.bytes()
        .map(|b| {
            let c = b as char;
            if c.is_ascii_alphanumeric() || "-_.~".contains(c) || (keep_slash && c == '/') {
                c.to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

struct TestRequest {
    method: &'static str,
    /// Decoded path segments; the wire path encodes each once.
    segments: Vec<&'static str>,
    /// Decoded query parameters.
    params: Vec<(&'static str, &'static str)>,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl TestRequest {
    fn wire_path(&self) -> String {
        let encoded: Vec<String> = self.segments.iter().map(|s| encode(s, false)).collect();
        format!("/{}", encoded.join("/"))
    }
    fn wire_query(&self) -> String {
        let pairs: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k, false), encode(v, false)))
            .collect();
        pairs.join("&")
    }
    /// Signs as a client does: every header present, X-Amz-Date at `amz_date`, scope from
    /// the arguments. Returns the wire headers, Authorization included.
    fn signed(
        &self,
        amz_date: &str,
        akid: &str,
        secret: &str,
        region: &str,
        service: &str,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let mut headers = self.headers.clone();
        headers.push(("x-amz-date", amz_date.to_string()));
        let mut canonical_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (n, v) in &headers {
            let squeezed = v.split_whitespace().collect::<Vec<_>>().join(" ");
            canonical_headers
                .entry(n.to_lowercase())
                .or_default()
                .push(squeezed);
        }
        let signed: Vec<&str> = canonical_headers.keys().map(String::as_str).collect();
        let signed = signed.join(";");
        let header_block: String = canonical_headers
            .iter()
            .map(|(n, vs)| format!("{n}:{}\n", vs.join(",")))
            .collect();
        let mut query: Vec<(String, String)> = self
            .params
            .iter()
            .map(|(k, v)| (encode(k, false), encode(v, false)))
            .collect();
        query.sort();
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        // Not S3: the (already encoded) wire path is encoded once more.
        let uri = encode(&self.wire_path(), true);
        let canonical = format!(
            "{}\n{uri}\n{}\n{header_block}\n{signed}\n{}",
            self.method,
            query.join("&"),
            sha256_hex(&self.body)
        );
        let date = &amz_date[..8];
        let scope = format!("{date}/{region}/{service}/aws4_request");
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            sha256_hex(canonical.as_bytes())
        );
        let k = hmac(format!("AWS4{secret}").as_bytes(), date);
        let k = hmac(&k, region);
        let k = hmac(&k, service);
        let k = hmac(&k, "aws4_request");
        let signature = hex::encode(hmac(&k, &to_sign));
        let mut wire = headers_of(&headers);
        wire.push((
            "authorization",
            format!("AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed}, Signature={signature}")
                .into_bytes(),
        ));
        wire
    }
}

/// Barge's request shapes: a Batch operation, a tag request whose ARN holds `:` and `/`, a
/// DELETE with repeated and odd query parameters, a Logs call, Barge's own GET.
fn samples() -> Vec<TestRequest> {
    let host = ("host", "barge.example:8433".to_string());
    vec![
        TestRequest {
            method: "POST",
            segments: vec!["v1", "submitjob"],
            params: vec![],
            headers: vec![
                host.clone(),
                ("content-type", "application/json".into()),
                ("user-agent", "aws-cli/1.44 Python/3.11".into()),
            ],
            body: br#"{"jobName":"x","jobQueue":"default","jobDefinition":"d"}"#.to_vec(),
        },
        TestRequest {
            method: "POST",
            segments: vec![
                "v1",
                "tags",
                "arn:aws:batch:us-east-1:000000000000:job-definition/d:1",
            ],
            params: vec![],
            headers: vec![host.clone(), ("content-type", "application/json".into())],
            body: br#"{"tags":{"k":"v"}}"#.to_vec(),
        },
        TestRequest {
            method: "DELETE",
            segments: vec![
                "v1",
                "tags",
                "arn:aws:batch:us-east-1:000000000000:job-queue/q",
            ],
            params: vec![("tagKeys", "b"), ("tagKeys", "a c"), ("tagKeys", "ü/+=&")],
            headers: vec![
                host.clone(),
                ("x-custom", "  spaced   out \t value ".into()),
            ],
            body: Vec::new(),
        },
        TestRequest {
            method: "POST",
            segments: vec![""],
            params: vec![],
            headers: vec![
                host.clone(),
                ("content-type", "application/x-amz-json-1.1".into()),
                ("x-amz-target", "Logs_20140328.GetLogEvents".into()),
                ("x-amz-security-token", "session-token-is-ignored".into()),
            ],
            body: br#"{"logGroupName":"/aws/batch/job","logStreamName":"s"}"#.to_vec(),
        },
        TestRequest {
            method: "GET",
            segments: vec!["barge", "v1", "jobs", "id with space", "why"],
            params: vec![],
            headers: vec![host],
            body: Vec::new(),
        },
    ]
}

const NOW_MS: i64 = T_2015_08_30_123600_MS;
const AMZ_DATE: &str = "20150830T123600Z";

fn run(
    r: &TestRequest,
    path: &str,
    query: &str,
    headers: &[(&'static str, Vec<u8>)],
    body: &[u8],
    service: &str,
) -> Result<Verified, ApiError> {
    check(
        r.method,
        path,
        query,
        headers,
        body,
        "us-east-1",
        service,
        NOW_MS,
    )
}

fn service_of(r: &TestRequest) -> &'static str {
    if r.segments == [""] {
        "logs"
    } else {
        "batch"
    }
}

#[test]
fn round_trip_of_an_independent_signer() {
    for r in samples() {
        let service = service_of(&r);
        let headers = r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", service);
        let got = run(
            &r,
            &r.wire_path(),
            &r.wire_query(),
            &headers,
            &r.body,
            service,
        );
        assert_eq!(
            got.map(|v| v.access_key_id),
            Ok(AKID.to_string()),
            "{} {}",
            r.method,
            r.wire_path()
        );
        // Within the skew either way is still fine.
        for skew_ms in [-SIGV4_CLOCK_SKEW_MS, SIGV4_CLOCK_SKEW_MS] {
            let borrowed: Vec<(&str, &[u8])> =
                headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
            let q = r.wire_query();
            let p = r.wire_path();
            let req = Request {
                method: r.method,
                path: &p,
                query: &q,
                headers: &borrowed,
                body: &r.body,
            };
            assert!(verify(&req, &keys(), "us-east-1", service, NOW_MS + skew_ms).is_ok());
        }
    }
}

fn assert_mismatch(result: Result<Verified, ApiError>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(
        (err.status, err.code),
        (403, "InvalidSignatureException"),
        "{what}: {err}"
    );
    assert!(
        err.message.starts_with("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."),
        "{what}: {}",
        err.message
    );
}

#[test]
fn every_change_to_a_signed_request_is_refused() {
    for r in samples() {
        let service = service_of(&r);
        let headers = r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", service);
        let (path, query) = (r.wire_path(), r.wire_query());
        let label = format!("{} {path}", r.method);

        // Each signed header's value (Authorization is not signed; X-Amz-Date is below).
        for i in 0..headers.len() {
            let name = headers[i].0;
            if name == "authorization" || name == "x-amz-date" {
                continue;
            }
            let mut changed = headers.clone();
            changed[i].1.push(b'x');
            assert_mismatch(
                run(&r, &path, &query, &changed, &r.body, service),
                &format!("{label}: header {name}"),
            );
            // A second occurrence of a signed header changes its canonical value too.
            let mut doubled = headers.clone();
            doubled.push((name, b"again".to_vec()));
            assert_mismatch(
                run(&r, &path, &query, &doubled, &r.body, service),
                &format!("{label}: repeated {name}"),
            );
        }
        // The body.
        let mut body = r.body.clone();
        body.push(b' ');
        assert_mismatch(
            run(&r, &path, &query, &headers, &body, service),
            &format!("{label}: body"),
        );
        // The path: another segment, and the same ARN with one escape decoded.
        assert_mismatch(
            run(&r, &format!("{path}x"), &query, &headers, &r.body, service),
            &format!("{label}: path"),
        );
        if path.contains("%3A") {
            let once = path.replacen("%3A", ":", 1);
            assert_mismatch(
                run(&r, &once, &query, &headers, &r.body, service),
                &format!("{label}: decoded path"),
            );
        }
        // The query: an added parameter, a changed value.
        let more = if query.is_empty() {
            "a=b".to_string()
        } else {
            format!("{query}&a=b")
        };
        assert_mismatch(
            run(&r, &path, &more, &headers, &r.body, service),
            &format!("{label}: query added"),
        );
        if !query.is_empty() {
            let changed = query.replacen("tagKeys=b", "tagKeys=B", 1);
            assert_mismatch(
                run(&r, &path, &changed, &headers, &r.body, service),
                &format!("{label}: query value"),
            );
        }
        // The method.
        let other = if r.method == "POST" { "PUT" } else { "POST" };
        let borrowed: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let req = Request {
            method: other,
            path: &path,
            query: &query,
            headers: &borrowed,
            body: &r.body,
        };
        assert_mismatch(
            verify(&req, &keys(), "us-east-1", service, NOW_MS),
            &format!("{label}: method"),
        );
        // The date, still within the skew: the stamp is part of what was signed.
        let mut redated = headers.clone();
        for h in redated.iter_mut().filter(|h| h.0 == "x-amz-date") {
            h.1 = b"20150830T123601Z".to_vec();
        }
        assert_mismatch(
            run(&r, &path, &query, &redated, &r.body, service),
            &format!("{label}: date"),
        );
        // The secret: signed by a client with the right id and a wrong secret.
        let wrong = r.signed(AMZ_DATE, AKID, "not-the-secret", "us-east-1", service);
        assert_mismatch(
            run(&r, &path, &query, &wrong, &r.body, service),
            &format!("{label}: secret"),
        );
        // Another configured key's id with this key's secret.
        let swapped = r.signed(AMZ_DATE, "AKIDOTHER", SECRET, "us-east-1", service);
        assert_mismatch(
            run(&r, &path, &query, &swapped, &r.body, service),
            &format!("{label}: other id"),
        );
        // The signature itself: one hex digit, and a signature that is not hex.
        let with_signature = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut tampered = headers.clone();
            edit(
                &mut tampered
                    .iter_mut()
                    .find(|h| h.0 == "authorization")
                    .unwrap()
                    .1,
            );
            tampered
        };
        let flipped = with_signature(&|auth| {
            let last = auth.len() - 1;
            auth[last] = if auth[last] == b'0' { b'1' } else { b'0' };
        });
        assert_mismatch(
            run(&r, &path, &query, &flipped, &r.body, service),
            &format!("{label}: signature"),
        );
        let not_hex = with_signature(&|auth| {
            auth.truncate(auth.len() - 64);
            auth.extend_from_slice(b"not hex");
        });
        assert_mismatch(
            run(&r, &path, &query, &not_hex, &r.body, service),
            &format!("{label}: not hex"),
        );
    }
}

#[test]
fn the_signer_agrees_with_the_independent_one_and_verifies() {
    for r in samples() {
        let service = service_of(&r);
        let (path, query) = (r.wire_path(), r.wire_query());
        let owned = headers_of(&r.headers);
        let borrowed: Vec<(&str, &[u8])> = owned.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let request = Request {
            method: r.method,
            path: &path,
            query: &query,
            headers: &borrowed,
            body: &r.body,
        };
        let key = SigningKey {
            access_key_id: AKID,
            secret_access_key: SECRET,
            region: "us-east-1",
            service,
        };
        let added = sign(&request, &key, NOW_MS + 999);
        let theirs = r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", service);
        let their_auth = theirs.iter().find(|h| h.0 == "authorization").unwrap();
        assert_eq!(added[0], ("x-amz-date".to_string(), AMZ_DATE.to_string()));
        assert_eq!(
            added[1].1.as_bytes(),
            their_auth.1.as_slice(),
            "{} {path}",
            r.method
        );
        let mut all = borrowed.clone();
        all.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_bytes())));
        let request = Request {
            headers: &all,
            ..request
        };
        assert!(verify(&request, &keys(), "us-east-1", service, NOW_MS).is_ok());
    }
}

// ---- scope, time and form ---------------------------------------------------------------

fn batch_sample() -> TestRequest {
    samples().remove(0)
}

fn run_sample(headers: &[(&'static str, Vec<u8>)], now_ms: i64) -> Result<Verified, ApiError> {
    let r = batch_sample();
    check(
        r.method,
        &r.wire_path(),
        "",
        headers,
        &r.body,
        "us-east-1",
        "batch",
        now_ms,
    )
}

#[test]
fn wrong_region_service_or_terminator_is_aws_s_invalid_signature() {
    let r = batch_sample();
    let cases = [
        (
            r.signed(AMZ_DATE, AKID, SECRET, "eu-west-1", "batch"),
            "Credential should be scoped to a valid region, not 'eu-west-1'.",
        ),
        (
            r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", "logs"),
            "Credential should be scoped to correct service: 'batch'.",
        ),
    ];
    for (headers, want) in cases {
        let err = run_sample(&headers, NOW_MS).unwrap_err();
        assert_eq!((err.status, err.code), (403, "InvalidSignatureException"));
        assert!(err.message.starts_with(want), "{}", err.message);
    }
    let mut headers = r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", "batch");
    let auth = &mut headers
        .iter_mut()
        .find(|h| h.0 == "authorization")
        .unwrap()
        .1;
    *auth = String::from_utf8(auth.clone())
        .unwrap()
        .replace("aws4_request", "aws5_request")
        .into_bytes();
    let err = run_sample(&headers, NOW_MS).unwrap_err();
    assert_eq!(
        err.message,
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'."
    );
    let mut headers = r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", "batch");
    let auth = &mut headers
        .iter_mut()
        .find(|h| h.0 == "authorization")
        .unwrap()
        .1;
    *auth = String::from_utf8(auth.clone())
        .unwrap()
        .replace("/20150830/", "/20150831/")
        .into_bytes();
    let err = run_sample(&headers, NOW_MS).unwrap_err();
    assert_eq!(err.code, "InvalidSignatureException");
    assert!(
        err.message.contains("'20150831' != '20150830'"),
        "{}",
        err.message
    );
}

#[test]
fn unknown_access_key_is_unrecognized_client() {
    let headers = batch_sample().signed(AMZ_DATE, "AKIDNOBODY", SECRET, "us-east-1", "batch");
    let err = run_sample(&headers, NOW_MS).unwrap_err();
    assert_eq!((err.status, err.code), (403, "UnrecognizedClientException"));
    assert!(err
        .message
        .starts_with("The security token included in the request is invalid."));
    assert!(err.message.contains("AKIDNOBODY"));
}

#[test]
fn stale_and_future_stamps_get_aws_s_wording() {
    let headers = batch_sample().signed(AMZ_DATE, AKID, SECRET, "us-east-1", "batch");
    let err = run_sample(&headers, NOW_MS + SIGV4_CLOCK_SKEW_MS + 1_000).unwrap_err();
    assert_eq!((err.status, err.code), (403, "InvalidSignatureException"));
    assert!(
        err.message.starts_with("Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z (20150830T124101Z - 5 min.)"),
        "{}",
        err.message
    );
    let err = run_sample(&headers, NOW_MS - SIGV4_CLOCK_SKEW_MS - 1_000).unwrap_err();
    assert_eq!(err.code, "InvalidSignatureException");
    assert!(
        err.message.starts_with("Signature not yet current: 20150830T123600Z is still later than 20150830T123559Z (20150830T123059Z + 5 min.)"),
        "{}",
        err.message
    );
}

#[test]
fn missing_and_malformed_authorization() {
    let r = batch_sample();
    let host = ("host", b"barge.example:8433".to_vec());
    let date = ("x-amz-date", AMZ_DATE.as_bytes().to_vec());
    let err = run_sample(&[host.clone(), date.clone()], NOW_MS).unwrap_err();
    assert_eq!(
        (err.status, err.code),
        (403, "MissingAuthenticationTokenException")
    );
    assert!(err.message.starts_with("Missing Authentication Token"));

    let good = r.signed(AMZ_DATE, AKID, SECRET, "us-east-1", "batch");
    let auth = String::from_utf8(
        good.iter()
            .find(|h| h.0 == "authorization")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    let with_auth = |value: &str, date: bool| {
        let mut h = vec![host.clone(), ("authorization", value.as_bytes().to_vec())];
        if date {
            h.push(("x-amz-date", AMZ_DATE.as_bytes().to_vec()));
        }
        run_sample(&h, NOW_MS).unwrap_err()
    };
    let incomplete = |err: ApiError, want: &str| {
        assert_eq!(
            (err.status, err.code),
            (400, "IncompleteSignatureException"),
            "{err}"
        );
        assert!(
            err.message.contains(want),
            "want {want:?} in {:?}",
            err.message
        );
    };
    incomplete(
        with_auth("Bearer abc", true),
        "Authorization header uses 'Bearer'",
    );
    incomplete(with_auth("AWS4-HMAC-SHA256", true), "requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter.");
    incomplete(
        with_auth(&auth, false),
        "requires existence of an 'X-Amz-Date' header",
    );
    incomplete(
        with_auth(&auth.replace("Signature=", "Signature"), true),
        "not a valid key=value pair (missing equal-sign)",
    );
    incomplete(
        with_auth(
            &auth.replace(&format!("Credential={AKID}/"), "Credential="),
            true,
        ),
        "Credential must have exactly 5 slash-delimited elements",
    );
    incomplete(
        with_auth(&auth.replace("SignedHeaders=", "SignedHeaders=;"), true),
        "has an empty header name",
    );
    incomplete(
        with_auth(
            &auth.replace(
                "SignedHeaders=content-type;host;",
                "SignedHeaders=content-type;",
            ),
            true,
        ),
        "'Host' must be a 'SignedHeader'",
    );
    incomplete(
        with_auth(
            &auth.replace(
                "SignedHeaders=content-type;",
                "SignedHeaders=content-type;Content-Type;",
            ),
            true,
        ),
        "names 'Content-Type' more than once",
    );
    let many: Vec<String> = (0..=SIGV4_SIGNED_HEADERS_MAX)
        .map(|i| format!("x-h{i}"))
        .collect();
    let many = auth.replace(
        "SignedHeaders=",
        &format!("SignedHeaders={};", many.join(";")),
    );
    incomplete(with_auth(&many, true), "Barge verifies at most");
    let mut twice = good.clone();
    twice.push(("authorization", auth.clone().into_bytes()));
    incomplete(
        run_sample(&twice, NOW_MS).unwrap_err(),
        "more than one Authorization header",
    );
    for bad in [
        "2015-08-30T12:36:00Z",
        "20150830T123600",
        "20150230T123600Z",
        "20151301T123600Z",
        "20150830T246000Z",
        "2015083é123600Z",
        "",
    ] {
        let mut h = good.clone();
        for x in h.iter_mut().filter(|x| x.0 == "x-amz-date") {
            x.1 = bad.as_bytes().to_vec();
        }
        incomplete(
            run_sample(&h, NOW_MS).unwrap_err(),
            "Date must be in ISO-8601 'basic format'",
        );
    }
}

#[test]
fn mismatch_message_shows_the_canonical_request_to_compare() {
    let r = batch_sample();
    let headers = r.signed(AMZ_DATE, AKID, "wrong", "us-east-1", "batch");
    let err = run_sample(&headers, NOW_MS).unwrap_err();
    assert!(
        err.message.contains(
            "The Canonical String for this request should have been\n'POST\n/v1/submitjob\n\n"
        ),
        "{}",
        err.message
    );
    assert!(err.message.contains("The String-to-Sign should have been\n'AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/batch/aws4_request\n"));
    assert!(!err.message.contains(SECRET) && !err.message.contains("wrong"));
}

// ---- the pieces ------------------------------------------------------------------------

#[test]
fn canonical_uri_normalises_then_encodes_again() {
    assert_eq!(canonical_uri(""), "/");
    assert_eq!(canonical_uri("/"), "/");
    assert_eq!(
        canonical_uri("/v1/tags/arn%3Aa%2Fb"),
        "/v1/tags/arn%253Aa%252Fb"
    );
    assert_eq!(canonical_uri("//a/./b/../c/"), "/a/c/");
    assert_eq!(canonical_uri("/a b/ü"), "/a%20b/%C3%BC");
}

#[test]
fn canonical_query_decodes_reencodes_and_sorts() {
    assert_eq!(canonical_query(""), "");
    assert_eq!(canonical_query("b=2&a=3&a=1&c"), "a=1&a=3&b=2&c=");
    assert_eq!(
        canonical_query("k=a%20b&k=%7e&k=a+b&k=%zz"),
        "k=%25zz&k=a%20b&k=a%2Bb&k=~"
    );
}

#[test]
fn amz_dates_round_trip_and_match_known_instants() {
    assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
    assert_eq!(parse_amz_date(AMZ_DATE), Some(NOW_MS / 1000));
    assert_eq!(parse_amz_date("20000229T235959Z"), Some(951_868_799));
    assert_eq!(parse_amz_date("21000229T000000Z"), None);
    assert_eq!(format_amz_date(4_102_444_800), "21000101T000000Z");
    // Every representable year: 0000 to 9999.
    for day in (-719_528..2_932_897).step_by(997) {
        let s = day * 86_400 + 45_296;
        assert_eq!(
            parse_amz_date(&format_amz_date(s)),
            Some(s),
            "{}",
            format_amz_date(s)
        );
    }
}

#[test]
fn access_keys_refuse_unusable_ids_and_conflicts_and_hide_secrets() {
    let mut k = AccessKeys::default();
    assert!(k.insert("", "s").is_err());
    assert!(k.insert("a/b", "s").is_err());
    assert!(k.insert("a b", "s").is_err());
    assert!(k.insert("a", "").is_err());
    k.insert("a", "TOPSECRET").unwrap();
    k.insert("a", "TOPSECRET").unwrap();
    assert!(k
        .insert("a", "t")
        .unwrap_err()
        .contains("twice with different secrets"));
    assert_eq!(k.len(), 1);
    let shown = format!("{k:?}");
    assert!(
        shown.contains("\"a\"") && !shown.contains("TOPSECRET"),
        "{shown}"
    );
}
