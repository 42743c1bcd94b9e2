//! Schedule expressions in EventBridge Scheduler's syntax: `cron(…)`, `rate(…)` and `at(…)`,
//! and the next fire time strictly after an instant, in the schedule's IANA time zone.
//!
//! Daylight saving time (docs/schedules.md): a local time that does not exist (the hour
//! skipped in spring) is moved forward by the length of the gap (02:30 becomes 03:30), so a
//! daily schedule still fires that day; a local time that happens twice (the hour repeated in
//! autumn) fires once, at its first occurrence. rate() counts real elapsed time and ignores
//! local clocks.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::limits::{
    CRON_YEAR_MAX, CRON_YEAR_MIN, RATE_MINUTES_MAX, SCHEDULE_EXPRESSION_CHARS_MAX,
};

/// A parsed scheduleExpression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expression {
    Cron(Cron),
    /// Every `period_ms`, counted from the schedule's anchor (when it was created or its
    /// expression last changed).
    Rate {
        period_ms: i64,
    },
    /// Once, at this local time.
    At(DateTime),
}

/// A cron expression: each field is the set of values it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: DayOfMonth,
    months: u16,
    weekdays: DayOfWeek,
    /// None: every year.
    years: Option<Vec<bool>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DayOfMonth {
    /// `?`: the day-of-week field decides.
    Any,
    /// Bit d: day d of the month (1–31).
    Days(u32),
    /// `L`
    Last,
    /// `LW`
    LastWeekday,
    /// `15W`: the weekday nearest to the 15th, within the month.
    NearestWeekday(i8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum DayOfWeek {
    Any,
    /// Bit d: weekday d, 1 = Sunday … 7 = Saturday.
    Days(u8),
    /// `6L`: the last Friday of the month.
    Last(i8),
    /// `6#3`: the third Friday of the month.
    Nth(i8, i8),
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parses a scheduleExpression; the error says what is wrong and how to write it.
pub fn parse_expression(s: &str) -> Result<Expression, String> {
    if s.chars().count() > SCHEDULE_EXPRESSION_CHARS_MAX {
        return Err(format!(
            "is longer than {SCHEDULE_EXPRESSION_CHARS_MAX} characters"
        ));
    }
    let s = s.trim();
    let inner = |prefix: &str| {
        s.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(body) = inner("cron(") {
        return parse_cron(body).map(Expression::Cron);
    }
    if let Some(body) = inner("rate(") {
        return parse_rate(body);
    }
    if let Some(body) = inner("at(") {
        return parse_at(body);
    }
    Err(format!(
        "{s:?} is not cron(minutes hours day-of-month month day-of-week year), rate(value unit) or at(yyyy-mm-ddThh:mm:ss)"
    ))
}

/// An IANA time zone name ("Europe/Paris", "UTC"), from the database bundled in the binary.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    TimeZone::get(name).map_err(|_| {
        format!("{name:?} is not an IANA time zone name (for example UTC, Europe/Paris, America/New_York)")
    })
}

fn parse_rate(body: &str) -> Result<Expression, String> {
    let mut parts = body.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "rate({body}) must be rate(value unit), for example rate(5 minutes)"
        ));
    };
    let n: i64 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!("rate({body}): the value {value:?} must be a positive whole number")
    })?;
    let (minutes_per, singular) = match unit {
        "minute" => (1, true),
        "minutes" => (1, false),
        "hour" => (60, true),
        "hours" => (60, false),
        "day" => (24 * 60, true),
        "days" => (24 * 60, false),
        _ => {
            return Err(format!(
                "rate({body}): the unit {unit:?} must be minute(s), hour(s) or day(s)"
            ))
        }
    };
    // EventBridge's rule, kept so expressions move between the two unchanged.
    if singular != (n == 1) {
        return Err(format!(
            "rate({body}): use the singular unit with 1 and the plural otherwise (rate(1 hour), rate(2 hours))"
        ));
    }
    let minutes = n.saturating_mul(minutes_per);
    if minutes > RATE_MINUTES_MAX {
        return Err(format!(
            "rate({body}) is longer than {RATE_MINUTES_MAX} minutes"
        ));
    }
    Ok(Expression::Rate {
        period_ms: minutes * 60_000,
    })
}

fn parse_at(body: &str) -> Result<Expression, String> {
    let bad = || {
        format!("at({body}) must be at(yyyy-mm-ddThh:mm:ss), for example at(2027-01-31T09:30:00)")
    };
    let b = body.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i16, String> {
        let t = &body[r];
        if !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse().map_err(|_| bad())
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let dt = DateTime::new(
        y,
        i8::try_from(mo).map_err(|_| bad())?,
        i8::try_from(d).map_err(|_| bad())?,
        i8::try_from(h).map_err(|_| bad())?,
        i8::try_from(mi).map_err(|_| bad())?,
        i8::try_from(s).map_err(|_| bad())?,
        0,
    )
    .map_err(|_| format!("at({body}) is not a real date and time"))?;
    Ok(Expression::At(dt))
}

fn parse_cron(body: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = body.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "cron({body}) has {} fields; it needs 6: minutes hours day-of-month month day-of-week year",
            fields.len()
        ));
    }
    let at = |name: &str, e: String| format!("cron({body}): {name}: {e}");
    let minutes = bits(fields[0], 0, 59, &[]).map_err(|e| at("minutes", e))?;
    let hours = bits(fields[1], 0, 23, &[]).map_err(|e| at("hours", e))? as u32;
    let months = bits(fields[3], 1, 12, &MONTHS).map_err(|e| at("month", e))? as u16;
    let days = parse_day_of_month(fields[2]).map_err(|e| at("day-of-month", e))?;
    let weekdays = parse_day_of_week(fields[4]).map_err(|e| at("day-of-week", e))?;
    match (&days, &weekdays) {
        (DayOfMonth::Any, DayOfWeek::Any) => {
            return Err(format!(
                "cron({body}): only one of day-of-month and day-of-week may be ?; give the other a value or *"
            ))
        }
        (DayOfMonth::Any, _) | (_, DayOfWeek::Any) => {}
        _ => {
            return Err(format!(
                "cron({body}): day-of-month and day-of-week cannot both have values; use ? in one of them"
            ))
        }
    }
    let years = if fields[5] == "*" {
        None
    } else {
        Some(year_set(fields[5]).map_err(|e| at("year", e))?)
    };
    Ok(Cron {
        minutes,
        hours,
        days,
        months,
        weekdays,
        years,
    })
}

/// One value: a number or one of `names` (JAN, MON…; numbered from `min`).
fn value(t: &str, min: i64, max: i64, names: &[&str]) -> Result<i64, String> {
    let upper = t.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        return Ok(min + i as i64);
    }
    let v: i64 = t
        .parse()
        .map_err(|_| format!("{t:?} is not a number{}", name_hint(names)))?;
    if v < min || v > max {
        return Err(format!("{v} is outside {min}–{max}"));
    }
    Ok(v)
}

fn name_hint(names: &[&str]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" or one of {}", names.join(","))
    }
}

/// The values a list of `*`, `a`, `a-b`, `*/s`, `a/s` and `a-b/s` entries matches.
fn values(field: &str, min: i64, max: i64, names: &[&str]) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for entry in field.split(',') {
        if entry.is_empty() {
            return Err(format!("{field:?} has an empty list entry"));
        }
        let (range, step) = match entry.split_once('/') {
            Some((r, s)) => {
                let step: i64 =
                    s.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("the step in {entry:?} must be a positive number")
                    })?;
                (r, Some(step))
            }
            None => (entry, None),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, min, max, names)?, value(b, min, max, names)?);
            if a > b {
                return Err(format!(
                    "the range {range:?} goes backwards; ranges that wrap around are not supported, list two ranges instead"
                ));
            }
            (a, b)
        } else {
            let a = value(range, min, max, names)?;
            // `a/s` runs from a to the end of the field's range.
            (a, if step.is_some() { max } else { a })
        };
        let step = step.unwrap_or(1);
        let mut v = lo;
        while v <= hi {
            out.push(v);
            // A step past the end of the range (even near i64::MAX) simply ends the run.
            match v.checked_add(step) {
                Some(next) => v = next,
                None => break,
            }
        }
    }
    Ok(out)
}

fn refuse_special(field: &str) -> Result<(), String> {
    if field == "?" {
        return Err("? is allowed only in day-of-month or day-of-week".into());
    }
    if let Some(c) = field.chars().find(|c| matches!(c, 'L' | 'W' | '#')) {
        return Err(format!(
            "{c} is allowed only in day-of-month (L, W) or day-of-week (L, #)"
        ));
    }
    Ok(())
}

fn bits(field: &str, min: i64, max: i64, names: &[&str]) -> Result<u64, String> {
    refuse_special(field)?;
    Ok(values(field, min, max, names)?
        .into_iter()
        .fold(0u64, |acc, v| acc | 1 << v))
}

fn year_set(field: &str) -> Result<Vec<bool>, String> {
    refuse_special(field)?;
    let (lo, hi) = (i64::from(CRON_YEAR_MIN), i64::from(CRON_YEAR_MAX));
    let mut set = vec![false; (hi - lo + 1) as usize];
    for v in values(field, lo, hi, &[])? {
        set[(v - lo) as usize] = true;
    }
    Ok(set)
}

fn parse_day_of_month(field: &str) -> Result<DayOfMonth, String> {
    match field {
        "?" => return Ok(DayOfMonth::Any),
        "L" => return Ok(DayOfMonth::Last),
        "LW" => return Ok(DayOfMonth::LastWeekday),
        _ => {}
    }
    if let Some(n) = field.strip_suffix('W') {
        let d = value(n, 1, 31, &[])
            .map_err(|e| format!("{field:?}: {e} (W follows one day, as in 15W)"))?;
        return Ok(DayOfMonth::NearestWeekday(d as i8));
    }
    if field.contains('L') || field.contains('W') {
        return Err(format!(
            "{field:?}: L, LW and nW stand alone in day-of-month (L-3 and lists with them are not supported)"
        ));
    }
    if field.contains('#') {
        return Err("# is allowed only in day-of-week".into());
    }
    Ok(DayOfMonth::Days(bits(field, 1, 31, &[])? as u32))
}

fn parse_day_of_week(field: &str) -> Result<DayOfWeek, String> {
    match field {
        "?" => return Ok(DayOfWeek::Any),
        // Alone, L is the last day of the week: Saturday.
        "L" => return Ok(DayOfWeek::Days(1 << 7)),
        _ => {}
    }
    if let Some(n) = field.strip_suffix('L') {
        let d = value(n, 1, 7, &WEEKDAYS)
            .map_err(|e| format!("{field:?}: {e} (as in 6L, the last Friday)"))?;
        return Ok(DayOfWeek::Last(d as i8));
    }
    if let Some((d, k)) = field.split_once('#') {
        let d = value(d, 1, 7, &WEEKDAYS)?;
        let k = value(k, 1, 5, &[])
            .map_err(|e| format!("{field:?}: the week {e} (as in 6#3, the third Friday)"))?;
        return Ok(DayOfWeek::Nth(d as i8, k as i8));
    }
    if field.contains('L') || field.contains('W') {
        return Err(format!(
            "{field:?}: L stands alone or after one day (6L) in day-of-week; W is for day-of-month"
        ));
    }
    Ok(DayOfWeek::Days(bits(field, 1, 7, &WEEKDAYS)? as u8))
}

fn is_weekday(d: Date) -> bool {
    !matches!(d.weekday().to_sunday_one_offset(), 1 | 7)
}

impl Cron {
    fn year_matches(&self, y: i16) -> bool {
        match &self.years {
            None => true,
            Some(set) => set[(y - CRON_YEAR_MIN) as usize],
        }
    }

    fn day_matches(&self, d: Date) -> bool {
        let last = d.days_in_month();
        let dow = d.weekday().to_sunday_one_offset();
        match &self.days {
            DayOfMonth::Any => {}
            DayOfMonth::Days(bits) => return bits & (1 << d.day()) != 0,
            DayOfMonth::Last => return d.day() == last,
            DayOfMonth::LastWeekday => {
                let mut l = d.first_of_month().with().day(last).build().expect("valid");
                while !is_weekday(l) {
                    l = l.yesterday().expect("in range");
                }
                return d == l;
            }
            DayOfMonth::NearestWeekday(n) => {
                // Not in this month (31W in a 30-day month): AWS never fires it either.
                if *n > last {
                    return false;
                }
                let target = d.with().day(*n).build().expect("valid");
                let nearest = match target.weekday().to_sunday_one_offset() {
                    // Saturday: the Friday before, or Monday the 3rd if the 1st is a Saturday.
                    7 if *n == 1 => target.with().day(3).build().expect("valid"),
                    7 => target.yesterday().expect("in range"),
                    // Sunday: the Monday after, or the Friday before on the month's last day.
                    1 if *n == last => target.with().day(n - 2).build().expect("valid"),
                    1 => target.tomorrow().expect("in range"),
                    _ => target,
                };
                return d == nearest;
            }
        }
        match &self.weekdays {
            DayOfWeek::Any => true,
            DayOfWeek::Days(bits) => bits & (1 << dow) != 0,
            DayOfWeek::Last(w) => dow == *w && d.day() + 7 > last,
            DayOfWeek::Nth(w, k) => dow == *w && (d.day() - 1) / 7 + 1 == *k,
        }
    }

    /// The first fire time strictly after `after`, or None before the year 2199 ends.
    fn next_after(&self, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
        let start = tz.to_datetime(after).date();
        for year in start.year().max(CRON_YEAR_MIN)..=CRON_YEAR_MAX {
            if !self.year_matches(year) {
                continue;
            }
            let first_month = if year == start.year() {
                start.month()
            } else {
                1
            };
            for month in first_month..=12 {
                if self.months & (1 << month) == 0 {
                    continue;
                }
                let first = Date::new(year, month, 1).ok()?;
                let from_day = if (year, month) == (start.year(), start.month()) {
                    start.day()
                } else {
                    1
                };
                for day in from_day..=first.days_in_month() {
                    let date = first.with().day(day).build().ok()?;
                    if !self.day_matches(date) {
                        continue;
                    }
                    if let Some(t) = self.first_on(tz, date, after) {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// The earliest instant after `after` among the day's times. All of them are looked at:
    /// across a DST gap, local order and instant order differ (02:30 moved to 03:30 comes
    /// after 03:00).
    fn first_on(&self, tz: &TimeZone, date: Date, after: Timestamp) -> Option<Timestamp> {
        let mut best: Option<Timestamp> = None;
        for h in 0..24i8 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            for m in 0..60i8 {
                if self.minutes & (1 << m) == 0 {
                    continue;
                }
                let Ok(t) = tz.to_ambiguous_timestamp(date.at(h, m, 0, 0)).compatible() else {
                    continue;
                };
                if t > after && best.is_none_or(|b| t < b) {
                    best = Some(t);
                }
            }
        }
        best
    }
}

impl Expression {
    /// The first fire time strictly after `after_ms` (epoch ms), None if there is none.
    /// `anchor_ms` is where a rate counts from.
    pub fn next_after(&self, tz: &TimeZone, anchor_ms: i64, after_ms: i64) -> Option<i64> {
        match self {
            Expression::Rate { period_ms } => {
                if after_ms < anchor_ms {
                    return Some(anchor_ms + period_ms);
                }
                let k = (after_ms - anchor_ms) / period_ms + 1;
                anchor_ms.checked_add(k.checked_mul(*period_ms)?)
            }
            Expression::At(dt) => {
                let t = tz.to_ambiguous_timestamp(*dt).compatible().ok()?;
                let ms = t.as_millisecond();
                (ms > after_ms).then_some(ms)
            }
            Expression::Cron(c) => {
                let after = Timestamp::from_millisecond(after_ms).ok()?;
                c.next_after(tz, after).map(|t| t.as_millisecond())
            }
        }
    }
}
