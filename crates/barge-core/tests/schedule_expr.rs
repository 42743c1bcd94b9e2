//! Schedule expressions: the parser's answers, next fire times in time zones across DST, and
//! a property test against a brute-force oracle that walks every local minute.

use barge_core::schedule::{parse_expression, parse_time_zone, Expression};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use proptest::prelude::*;

fn ms(s: &str) -> i64 {
    s.parse::<Timestamp>().unwrap().as_millisecond()
}

fn iso(ms: i64) -> String {
    Timestamp::from_millisecond(ms).unwrap().to_string()
}

/// The next fire after `after` (an RFC 3339 instant), as an RFC 3339 UTC instant.
fn next(expr: &str, tz: &str, after: &str) -> Option<String> {
    let e = parse_expression(expr).unwrap();
    let tz = parse_time_zone(tz).unwrap();
    e.next_after(&tz, 0, ms(after)).map(iso)
}

/// The fire times after `after`, `n` of them.
fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
    let e = parse_expression(expr).unwrap();
    let tz = parse_time_zone(tz).unwrap();
    let mut t = ms(after);
    let mut out = Vec::new();
    for _ in 0..n {
        t = e.next_after(&tz, 0, t).unwrap();
        out.push(iso(t));
    }
    out
}

#[test]
fn refused_expressions_say_why() {
    let cases = [
        ("every day", "is not cron("),
        ("cron(0 12 * * ?)", "has 5 fields; it needs 6"),
        ("cron(0 12 * * * *)", "cannot both have values"),
        (
            "cron(0 12 ? * ? *)",
            "only one of day-of-month and day-of-week may be ?",
        ),
        ("cron(60 12 * * ? *)", "minutes: 60 is outside 0–59"),
        ("cron(0 24 * * ? *)", "hours: 24 is outside 0–23"),
        ("cron(0 12 32 * ? *)", "day-of-month: 32 is outside 1–31"),
        ("cron(0 12 * 13 ? *)", "month: 13 is outside 1–12"),
        ("cron(0 12 ? * 8 *)", "day-of-week: 8 is outside 1–7"),
        ("cron(0 12 * * ? 2200)", "year: 2200 is outside 1970–2199"),
        ("cron(0 12 * FOO ? *)", "is not a number or one of JAN"),
        ("cron(0 12 ? * FRI-MON *)", "goes backwards"),
        ("cron(*/0 12 * * ? *)", "must be a positive number"),
        ("cron(0 12 L-3 * ? *)", "stand alone in day-of-month"),
        ("cron(0 12 ? * 6#6 *)", "outside 1–5"),
        ("cron(0 L * * ? *)", "L is allowed only in day-of-month"),
        ("cron(0 12 * * ? ?)", "? is allowed only"),
        ("cron(0 12 1# * ? *)", "# is allowed only in day-of-week"),
        ("rate(0 minutes)", "must be a positive whole number"),
        ("rate(5 minute)", "use the singular unit with 1"),
        ("rate(1 hours)", "use the singular unit with 1"),
        ("rate(5 weeks)", "must be minute(s), hour(s) or day(s)"),
        ("rate(5)", "must be rate(value unit)"),
        ("at(2027-02-30T10:00:00)", "is not a real date and time"),
        ("at(2027-02-03 10:00:00)", "must be at(yyyy-mm-ddThh:mm:ss)"),
    ];
    for (expr, want) in cases {
        let err = parse_expression(expr).expect_err(expr);
        assert!(
            err.contains(want),
            "{expr}: {err:?} should contain {want:?}"
        );
    }
    let long = format!("cron({})", "1,".repeat(200));
    assert!(parse_expression(&long)
        .unwrap_err()
        .contains("longer than 256"));
}

#[test]
fn accepted_expressions() {
    for expr in [
        "cron(0 12 * * ? *)",
        "cron(0/15 * ? * MON-FRI *)",
        "cron(5,35 14 * * ? 2027-2030)",
        "cron(0 18 ? * 6L 2027)",
        "cron(0 8 ? * 2#1 *)",
        "cron(0 9 LW * ? *)",
        "cron(0 9 15W * ? *)",
        "cron(0 9 L JAN,jul ? *)",
        "cron(0 9 ? * L *)",
        "  rate(1 minute)  ",
        "rate(3 days)",
        "at(2027-01-31T09:30:00)",
    ] {
        parse_expression(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
    }
}

#[test]
fn time_zones_come_from_the_bundled_database() {
    for tz in [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",
        "Australia/Lord_Howe",
    ] {
        parse_time_zone(tz).unwrap();
    }
    let err = parse_time_zone("Mars/Olympus_Mons").unwrap_err();
    assert!(err.contains("is not an IANA time zone name"), "{err}");
    assert!(parse_time_zone("")
        .unwrap_err()
        .contains("must not be empty"));
}

#[test]
fn cron_next_fire_table() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (expression, zone, after, next)
        (
            "cron(0 12 * * ? *)",
            "UTC",
            "2026-11-21T11:59:59Z",
            "2026-11-21T12:00:00Z",
        ),
        // Strictly after: a fire time itself is not returned again.
        (
            "cron(0 12 * * ? *)",
            "UTC",
            "2026-11-21T12:00:00Z",
            "2026-11-22T12:00:00Z",
        ),
        (
            "cron(0 12 * * ? *)",
            "Europe/Paris",
            "2026-11-21T00:00:00Z",
            "2026-11-21T11:00:00Z",
        ),
        (
            "cron(0 12 * * ? *)",
            "Europe/Paris",
            "2026-07-01T00:00:00Z",
            "2026-07-01T10:00:00Z",
        ),
        (
            "cron(30 9 * * ? *)",
            "Asia/Kolkata",
            "2026-11-21T00:00:00Z",
            "2026-11-21T04:00:00Z",
        ),
        (
            "cron(0/20 * * * ? *)",
            "UTC",
            "2026-11-21T10:41:00Z",
            "2026-11-21T11:00:00Z",
        ),
        (
            "cron(10/20 * * * ? *)",
            "UTC",
            "2026-11-21T10:51:00Z",
            "2026-11-21T11:10:00Z",
        ),
        // 2026-11-21 is a Saturday: MON-FRI goes to Monday.
        (
            "cron(0 8 ? * MON-FRI *)",
            "UTC",
            "2026-11-21T00:00:00Z",
            "2026-11-23T08:00:00Z",
        ),
        (
            "cron(0 8 ? * 1 *)",
            "UTC",
            "2026-11-21T00:00:00Z",
            "2026-11-22T08:00:00Z",
        ),
        // Last day of the month, February of a leap year and not.
        (
            "cron(0 0 L * ? *)",
            "UTC",
            "2027-02-01T00:00:00Z",
            "2027-02-28T00:00:00Z",
        ),
        (
            "cron(0 0 L * ? *)",
            "UTC",
            "2028-02-01T00:00:00Z",
            "2028-02-29T00:00:00Z",
        ),
        // Last weekday: 2026-05-31 is a Sunday.
        (
            "cron(0 0 LW * ? *)",
            "UTC",
            "2026-05-01T00:00:00Z",
            "2026-05-29T00:00:00Z",
        ),
        // Nearest weekday: 2026-11-15 is a Sunday → Monday the 16th; 2026-08-01 a Saturday →
        // Monday the 3rd (never the month before); 2026-05-31 a Sunday → Friday the 29th.
        (
            "cron(0 0 15W * ? *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            "2026-11-16T00:00:00Z",
        ),
        (
            "cron(0 0 1W * ? *)",
            "UTC",
            "2026-07-02T00:00:00Z",
            "2026-08-03T00:00:00Z",
        ),
        (
            "cron(0 0 31W * ? *)",
            "UTC",
            "2026-05-01T00:00:00Z",
            "2026-05-29T00:00:00Z",
        ),
        // 31W in a 30-day month does not fire.
        (
            "cron(0 0 31W 6,7 ? *)",
            "UTC",
            "2026-06-01T00:00:00Z",
            "2026-07-31T00:00:00Z",
        ),
        // Last Friday; third Friday; fifth Friday (skips months with four).
        (
            "cron(0 18 ? * 6L *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            "2026-11-27T18:00:00Z",
        ),
        (
            "cron(0 18 ? * FRI#3 *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            "2026-11-20T18:00:00Z",
        ),
        (
            "cron(0 18 ? * 6#5 *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            "2027-01-29T18:00:00Z",
        ),
        // Years.
        (
            "cron(0 0 1 1 ? 2030)",
            "UTC",
            "2026-11-21T00:00:00Z",
            "2030-01-01T00:00:00Z",
        ),
        (
            "cron(0 0 29 2 ? *)",
            "UTC",
            "2026-11-21T00:00:00Z",
            "2028-02-29T00:00:00Z",
        ),
    ];
    for (expr, tz, after, want) in cases {
        assert_eq!(
            next(expr, tz, after).as_deref(),
            Some(*want),
            "{expr} in {tz} after {after}"
        );
    }
    assert_eq!(
        next("cron(0 0 1 1 ? 2025)", "UTC", "2026-01-01T00:00:00Z"),
        None
    );
    assert_eq!(
        next("cron(0 0 31 2 ? *)", "UTC", "2026-01-01T00:00:00Z"),
        None
    );
}

#[test]
fn a_skipped_local_time_is_moved_forward_by_the_gap() {
    // New York springs forward on 2026-03-08: 02:00 EST becomes 03:00 EDT.
    assert_eq!(
        fires(
            "cron(30 2 * * ? *)",
            "America/New_York",
            "2026-03-07T00:00:00Z",
            3
        ),
        [
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:30:00Z", // 02:30 does not exist: 03:30 EDT
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]
    );
    // Hourly: 02:00 moves onto 03:00, which fires once.
    assert_eq!(
        fires(
            "cron(0 * * * ? *)",
            "America/New_York",
            "2026-03-08T05:30:00Z",
            3
        ),
        [
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT (02:00 moved onto it)
            "2026-03-08T08:00:00Z", // 04:00 EDT
        ]
    );
    // Lord Howe Island moves its clocks by 30 minutes (02:00 → 02:30 on 2026-10-04).
    assert_eq!(
        fires(
            "cron(15 2 * * ? *)",
            "Australia/Lord_Howe",
            "2026-10-02T00:00:00Z",
            2
        ),
        [
            "2026-10-02T15:45:00Z", // 02:15 +10:30 on the 3rd
            "2026-10-03T15:45:00Z", // 02:15 does not exist on the 4th: 02:45 +11:00
        ]
    );
}

#[test]
fn a_repeated_local_time_fires_once() {
    // New York falls back on 2026-11-01: 01:00–02:00 happens twice (EDT, then EST).
    assert_eq!(
        fires(
            "cron(30 1 * * ? *)",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            3
        ),
        [
            "2026-11-01T05:30:00Z", // 01:30 EDT, the first of the two
            "2026-11-02T06:30:00Z", // 01:30 EST the next day
            "2026-11-03T06:30:00Z",
        ]
    );
    // Every 30 minutes: the repeated hour is not walked twice.
    assert_eq!(
        fires(
            "cron(0/30 * * * ? *)",
            "America/New_York",
            "2026-11-01T04:45:00Z",
            5
        ),
        [
            "2026-11-01T05:00:00Z", // 01:00 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-01T07:00:00Z", // 02:00 EST (01:00 and 01:30 EST are repeats)
            "2026-11-01T07:30:00Z",
            "2026-11-01T08:00:00Z",
        ]
    );
}

#[test]
fn rate_counts_real_time_from_its_anchor() {
    let e = parse_expression("rate(2 hours)").unwrap();
    let tz = parse_time_zone("America/New_York").unwrap();
    let anchor = ms("2026-03-08T00:00:00Z");
    let h = 3_600_000;
    assert_eq!(e.next_after(&tz, anchor, anchor), Some(anchor + 2 * h));
    assert_eq!(
        e.next_after(&tz, anchor, anchor + 2 * h),
        Some(anchor + 4 * h)
    );
    assert_eq!(
        e.next_after(&tz, anchor, anchor + 2 * h - 1),
        Some(anchor + 2 * h)
    );
    // Before the anchor: the first period after it.
    assert_eq!(
        e.next_after(&tz, anchor, anchor - 5 * h),
        Some(anchor + 2 * h)
    );
    // Across the DST change nothing shifts: still every 2 real hours.
    assert_eq!(
        e.next_after(&tz, anchor, anchor + 9 * h),
        Some(anchor + 10 * h)
    );
}

#[test]
fn at_fires_once_in_its_zone() {
    assert_eq!(
        next(
            "at(2027-01-31T09:30:00)",
            "Europe/Paris",
            "2026-11-21T00:00:00Z"
        )
        .as_deref(),
        Some("2027-01-31T08:30:00Z")
    );
    assert_eq!(
        next(
            "at(2027-01-31T09:30:00)",
            "Europe/Paris",
            "2027-01-31T08:30:00Z"
        ),
        None
    );
    // In a gap, moved forward like cron.
    assert_eq!(
        next(
            "at(2026-03-08T02:30:00)",
            "America/New_York",
            "2026-01-01T00:00:00Z"
        )
        .as_deref(),
        Some("2026-03-08T07:30:00Z")
    );
}

/// The oracle: every local minute in a window around `after`, each mapped to its instant the
/// documented way (gap: forward by the gap; fold: the first), the least one after `after`.
fn oracle(minutes: &[i8], hours: &[i8], tz: &TimeZone, after: i64) -> Option<i64> {
    let start = tz
        .to_datetime(Timestamp::from_millisecond(after).unwrap())
        .date()
        .yesterday()
        .unwrap();
    let mut best: Option<i64> = None;
    for day in 0..4 {
        let date = start + jiff::Span::new().days(day);
        for &h in hours {
            for &m in minutes {
                let local: DateTime = date.at(h, m, 0, 0);
                let t = tz
                    .to_ambiguous_timestamp(local)
                    .compatible()
                    .unwrap()
                    .as_millisecond();
                if t > after && best.is_none_or(|b| t < b) {
                    best = Some(t);
                }
            }
        }
    }
    best
}

const ZONES: [&str; 6] = [
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "America/Santiago",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Daily-ish cron expressions agree with the oracle, at random instants and at instants
    /// crowded around DST changes.
    #[test]
    fn cron_agrees_with_the_oracle(
        minutes in proptest::collection::btree_set(0i8..60, 1..4),
        hours in proptest::collection::btree_set(0i8..24, 1..4),
        zone in 0usize..ZONES.len(),
        near_change in any::<bool>(),
        offset_min in 0i64..(3 * 24 * 60),
        day in 0i64..(5 * 365),
    ) {
        let tz = parse_time_zone(ZONES[zone]).unwrap();
        let list = |v: &std::collections::BTreeSet<i8>| {
            v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
        };
        let expr = format!("cron({} {} * * ? *)", list(&minutes), list(&hours));
        let e = parse_expression(&expr).unwrap();
        let after = if near_change {
            // A day and a half either side of the 2026 changes in the northern and southern
            // zones, to the minute.
            let changes = [ms("2026-03-08T00:00:00Z"), ms("2026-10-03T00:00:00Z"),
                ms("2026-11-01T00:00:00Z"), ms("2026-03-29T00:00:00Z"), ms("2026-04-04T00:00:00Z")];
            changes[(offset_min as usize) % changes.len()] + (offset_min - 36 * 60) * 60_000 + 17
        } else {
            ms("2024-01-01T00:00:00Z") + day * 86_400_000 + offset_min * 60_000
        };
        let m: Vec<i8> = minutes.iter().copied().collect();
        let h: Vec<i8> = hours.iter().copied().collect();
        let got = e.next_after(&tz, 0, after);
        prop_assert_eq!(got, oracle(&m, &h, &tz, after), "{} in {} after {}", expr, ZONES[zone], iso(after));
        // Strictly after, and a fire time of its own: the next after it is later still.
        let got = got.unwrap();
        prop_assert!(got > after);
        prop_assert!(e.next_after(&tz, 0, got).unwrap() > got);
    }

    /// rate(): strictly after, on the anchor's grid, less than a period away.
    #[test]
    fn rate_is_on_its_grid(n in 1i64..500, anchor in 0i64..4_000_000_000_000, delta in -10_000_000i64..10_000_000_000) {
        let e = parse_expression(&format!("rate({n} minutes)").replace("rate(1 minutes)", "rate(1 minute)")).unwrap();
        let period = n * 60_000;
        let after = anchor + delta;
        let got = e.next_after(&TimeZone::UTC, anchor, after).unwrap();
        prop_assert!(got > after);
        prop_assert_eq!((got - anchor) % period, 0);
        prop_assert!(got - after <= period || after < anchor);
    }

    /// Nothing the parser is given makes it panic.
    #[test]
    fn parser_never_panics(s in "(cron|rate|at)\\([ -~]{0,40}\\)") {
        let _ = parse_expression(&s);
    }
}

#[test]
fn expression_kinds() {
    assert!(matches!(
        parse_expression("rate(1 day)"),
        Ok(Expression::Rate {
            period_ms: 86_400_000
        })
    ));
    assert!(matches!(
        parse_expression("at(2027-01-01T00:00:00)"),
        Ok(Expression::At(_))
    ));
    assert!(matches!(
        parse_expression("cron(0 0 * * ? *)"),
        Ok(Expression::Cron(_))
    ));
}

/// A step far past the end of a field's range (up to i64::MAX) takes the start value only,
/// never wraps around into other values or panics.
#[test]
fn huge_steps_take_only_the_start() {
    let max = i64::MAX;
    assert_eq!(
        fires(
            &format!("cron(0 1/{max} * * ? *)"),
            "UTC",
            "2026-01-01T00:00:00Z",
            2
        ),
        ["2026-01-01T01:00:00Z", "2026-01-02T01:00:00Z"]
    );
    assert_eq!(
        fires(
            &format!("cron(30/{max} * * * ? *)"),
            "UTC",
            "2026-01-01T00:00:00Z",
            2
        ),
        ["2026-01-01T00:30:00Z", "2026-01-01T01:30:00Z"]
    );
    assert_eq!(
        next(
            &format!("cron(0 0 1 1 ? 2030/{max})"),
            "UTC",
            "2026-01-01T00:00:00Z"
        )
        .as_deref(),
        Some("2030-01-01T00:00:00Z")
    );
}
