//! Times as the admin types and reads them: RFC 3339 or `YYYY-MM-DD`, in the local time zone
//! (`TZ`). Internally every time is nanoseconds since the Unix epoch (`i64`). Also the check that
//! a new dump's or clone's time follows the volume's latest dump.

use chrono::{DateTime, Local, NaiveDate, NaiveTime, TimeZone};

use crate::record::DumpRecord;
use crate::{Error, Result};

/// What a bare date means: `--date` takes the start of the day, `--at` its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DayEdge {
    Start,
    End,
}

/// Parse an RFC 3339 time, or a `YYYY-MM-DD` date in the local zone, into epoch nanoseconds.
pub fn parse_time(s: &str, edge: DayEdge) -> Result<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return to_ns(t.timestamp(), t.timestamp_subsec_nanos(), s);
    }
    // Also accept a space instead of the `T`, and a local time without an offset.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            let local = Local
                .from_local_datetime(&naive)
                .earliest()
                .ok_or_else(|| {
                    Error::usage(format!("time {s:?} does not exist in the local time zone"))
                })?;
            return to_ns(local.timestamp(), local.timestamp_subsec_nanos(), s);
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let naive = match edge {
            DayEdge::Start => date.and_time(NaiveTime::MIN),
            DayEdge::End => date
                .and_hms_nano_opt(23, 59, 59, 999_999_999)
                .expect("valid time"),
        };
        let local = match edge {
            DayEdge::Start => Local.from_local_datetime(&naive).earliest(),
            DayEdge::End => Local.from_local_datetime(&naive).latest(),
        }
        .ok_or_else(|| Error::usage(format!("date {s:?} does not exist in the local time zone")))?;
        return to_ns(local.timestamp(), local.timestamp_subsec_nanos(), s);
    }
    if let Some(why) = s.get(..10).and_then(no_such_day) {
        return Err(Error::usage(format!(
            "{why} (times are RFC 3339, 2026-11-20T03:00:00+01:00, or a date, 2026-11-20)"
        )));
    }
    Err(Error::usage(format!(
        "cannot read time {s:?}: use RFC 3339 (2026-11-20T03:00:00+01:00) or a date (2026-11-20)"
    )))
}

/// A calendar date written `YYYY-MM-DD`; a well-formed date that names no day (2026-11-31) is
/// told apart from a malformed one.
pub fn parse_day(s: &str) -> Result<NaiveDate> {
    let s = s.trim();
    NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        Error::usage(
            no_such_day(s).unwrap_or_else(|| format!("{s:?} is not a date: give it as YYYY-MM-DD")),
        )
    })
}

/// Why `s`, shaped `YYYY-MM-DD`, names no day ("2026-11-31 is not a date: November 2026 has 30
/// days"); None when it is not of that shape or is a real day.
fn no_such_day(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('-').collect();
    let [y, m, d] = parts[..] else { return None };
    if [(y, 4), (m, 2), (d, 2)]
        .iter()
        .any(|(p, n)| p.len() != *n || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let (y, m, d): (i32, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    if NaiveDate::from_ymd_opt(y, m, d).is_some() {
        return None;
    }
    let Ok(month) = chrono::Month::try_from(u8::try_from(m).ok()?) else {
        return Some(format!("{s} is not a date: there is no month {m}"));
    };
    let first = NaiveDate::from_ymd_opt(y, m, 1)?;
    let days = first.checked_add_months(chrono::Months::new(1))? - first;
    Some(format!(
        "{s} is not a date: {} {y} has {} days",
        month.name(),
        days.num_days()
    ))
}

fn to_ns(secs: i64, nanos: u32, s: &str) -> Result<i64> {
    secs.checked_mul(1_000_000_000)
        .and_then(|n| n.checked_add(i64::from(nanos)))
        .ok_or_else(|| Error::usage(format!("time {s:?} is out of range")))
}

/// The current time in epoch nanoseconds.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    d.as_nanos() as i64
}

fn local(ns: i64) -> DateTime<Local> {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    Local
        .timestamp_opt(secs, nanos)
        .single()
        .unwrap_or_else(|| Local.timestamp_opt(0, 0).single().expect("epoch"))
}

/// RFC 3339 in the local zone, whole seconds unless the time has a fraction.
pub fn format_rfc3339(ns: i64) -> String {
    let t = local(ns);
    if ns.rem_euclid(1_000_000_000) == 0 {
        t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.9f%:z").to_string()
    }
}

/// Short human form for tables: `2026-11-20 03:00:00`.
pub fn format_short(ns: i64) -> String {
    local(ns).format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Seconds as `1.23 s` / `2 min 5 s`.
pub fn format_duration(ns: u64) -> String {
    let s = ns as f64 / 1e9;
    if s < 60.0 {
        format!("{s:.2} s")
    } else {
        format!("{} min {:.0} s", (s / 60.0) as u64, s % 60.0)
    }
}

/// Bytes as `12.3 MiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The local calendar date of an instant.
pub fn local_date(ns: i64) -> NaiveDate {
    local(ns).date_naive()
}

/// The instant on local date `date` at the same local time of day as `now`: how `nightly
/// --date` replays a night (each run still gets a distinct, later time).
pub fn on_date(date: NaiveDate, now: i64) -> Result<i64> {
    let naive = date.and_time(local(now).time());
    let t = Local
        .from_local_datetime(&naive)
        .earliest()
        .ok_or_else(|| Error::usage(format!("{naive} does not exist in the local time zone")))?;
    to_ns(
        t.timestamp(),
        t.timestamp_subsec_nanos(),
        &naive.to_string(),
    )
}

/// Refuse a dump time not later than the volume's latest dump.
pub(crate) fn check_time(name: &str, dumps: &[DumpRecord], time_ns: i64) -> Result<()> {
    if let Some(last) = dumps.last().filter(|l| time_ns <= l.time_ns) {
        // A latest dump dated ahead of the clock blocks every dump until then: say how out.
        let what_to_do = if last.time_ns > now_ns().saturating_add(MAX_AHEAD_NS) {
            format!(
                "dump {} is dated ahead of the clock: `reel forget {}` removes it, and dumps of the present can follow again",
                last.id, last.id
            )
        } else {
            "give a later --date".to_string()
        };
        return Err(Error::usage(format!(
            "dump time {} is not later than the latest dump of volume {name} (dump {} at {}); {what_to_do}",
            format_rfc3339(time_ns),
            last.id,
            format_rfc3339(last.time_ns)
        )));
    }
    Ok(())
}

/// How far ahead of the clock a dump or clone time may be without `--force-date`.
pub const MAX_AHEAD_NS: i64 = 24 * 3600 * 1_000_000_000;

#[cfg(test)]
mod tests {
    /// A date that does not exist says so, and which days the month has; a malformed one says
    /// how to write it.
    #[test]
    fn impossible_dates_are_named() {
        let e = super::parse_day("2026-11-31").unwrap_err().to_string();
        assert!(
            e.contains("2026-11-31 is not a date: November 2026 has 30 days"),
            "{e}"
        );
        let e = super::parse_day("2027-02-29").unwrap_err().to_string();
        assert!(e.contains("February 2027 has 28 days"), "{e}");
        let e = super::parse_day("2026-13-01").unwrap_err().to_string();
        assert!(e.contains("there is no month 13"), "{e}");
        let e = super::parse_day("31/11/2026").unwrap_err().to_string();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
        assert!(super::parse_day("2028-02-29").is_ok());
        let e = super::parse_time("2026-11-31", super::DayEdge::Start)
            .unwrap_err()
            .to_string();
        assert!(e.contains("November 2026 has 30 days"), "{e}");
        let e = super::parse_time("2026-04-31T03:00:00", super::DayEdge::Start)
            .unwrap_err()
            .to_string();
        assert!(e.contains("April 2026 has 30 days"), "{e}");
    }

    use super::*;

    #[test]
    fn date_edges_and_rfc3339() {
        let start = parse_time("2026-11-20", DayEdge::Start).unwrap();
        let end = parse_time("2026-11-20", DayEdge::End).unwrap();
        assert_eq!(end - start, 86_400_000_000_000 - 1);
        let t = parse_time("2026-11-20T03:00:00Z", DayEdge::Start).unwrap();
        assert_eq!(t, 1_795_143_600 * 1_000_000_000);
        assert_eq!(parse_time(&format_rfc3339(t), DayEdge::End).unwrap(), t);
        assert!(parse_time("yesterday", DayEdge::End).is_err());
    }

    #[test]
    fn bytes_format() {
        assert_eq!(format_bytes(10), "10 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
    }
}
