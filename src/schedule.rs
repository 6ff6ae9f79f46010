//! Dump schedules: which level each volume gets on which day (docs/SCHEDULES.md).
//!
//! A schedule is a string of day letters, as in the Coda backup system's dumplist: `F` is a
//! full dump (level 0), `I` an incremental (level 1), and a digit `0`-`9` is that level.
//! Lower-case `f` and `i` are accepted too, because nothing else could be meant; the canonical
//! form ([`Schedule`]'s `Display`, and what `reel.toml` stores) is upper case.
//!
//! The string's length (1 to 64 letters) is the cycle in days. Which letter applies on a date is
//! `days since 1970-01-04 mod length`: 1970-01-04 was a Sunday, so in a 7-letter schedule the
//! first letter is Sunday's (`date.weekday().num_days_from_sunday()`), as Coda's admins expect,
//! and every other length cycles steadily through the calendar with no jump at a week, month or
//! year boundary.
//!
//! Dates are local calendar dates, never UTC: the admin's "Sunday" is the Sunday on the wall
//! clock where the spool runs (`TZ`). That is why the functions here take a [`NaiveDate`] (a
//! date with no zone) and [`today_local`] reads the local clock.
//!
//! [`parse_dumplist`] reads a Coda dumplist (volume, schedule and a comment per line). It checks
//! every line before anything is applied and reports every bad line at once, because Coda
//! silently dropped the rest of a file after a bad line, and an admin fixing a file wants the
//! whole list of what is wrong. [`import_dumplist`] is all or nothing for the same reason.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{Local, NaiveDate};

use crate::settings::{Settings, VolumeSettings, validate_volume_name};
use crate::timefmt::{DayEdge, parse_time};
use crate::{Error, Result};

/// Longest cycle a schedule may describe, in days.
pub const MAX_CYCLE: usize = 64;

/// A parsed schedule. Invariant: 1..=64 letters, each one of `F`, `I`, `0`-`9` (upper case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    letters: Vec<u8>,
}

/// The Sunday from which day indexes count (see the module doc).
fn day_zero() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 4).expect("1970-01-04 is a valid date")
}

impl Schedule {
    /// Parse day letters. An error names the first bad letter and its position (from 1).
    pub fn parse(s: &str) -> Result<Schedule> {
        let n = s.chars().count();
        if n == 0 {
            return Err(Error::usage(
                "empty schedule: give 1 to 64 day letters (F = level 0, I = level 1, 0-9 = that level), e.g. FIIIIII",
            ));
        }
        if n > MAX_CYCLE {
            return Err(Error::usage(format!(
                "schedule {s:?} has {n} letters: a cycle is at most {MAX_CYCLE} days"
            )));
        }
        let mut letters = Vec::with_capacity(n);
        for (i, c) in s.chars().enumerate() {
            let up = c.to_ascii_uppercase();
            if !(up == 'F' || up == 'I' || up.is_ascii_digit()) {
                return Err(Error::usage(format!(
                    "schedule {s:?}: letter {c:?} at position {} is not a day letter: use F (level 0), I (level 1) or a digit 0-9",
                    i + 1
                )));
            }
            letters.push(up as u8);
        }
        Ok(Schedule { letters })
    }

    /// Cycle length in days.
    pub fn len(&self) -> usize {
        self.letters.len()
    }

    /// Always false: a schedule has at least one letter (kept for clippy's `len` rule).
    pub fn is_empty(&self) -> bool {
        self.letters.is_empty()
    }

    /// Index of `date`'s letter in the schedule.
    pub fn day_index(&self, date: NaiveDate) -> usize {
        let days = (date - day_zero()).num_days();
        // rem_euclid: dates before 1970-01-04 still land in 0..len.
        days.rem_euclid(self.letters.len() as i64) as usize
    }

    /// The level this schedule names for a local calendar date.
    pub fn level_on(&self, date: NaiveDate) -> u8 {
        letter_level(self.letters[self.day_index(date)])
    }
}

fn letter_level(l: u8) -> u8 {
    match l {
        b'F' => 0,
        b'I' => 1,
        d => d - b'0',
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The letters are ASCII by construction.
        f.write_str(&String::from_utf8_lossy(&self.letters))
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Schedule> {
        Schedule::parse(s)
    }
}

/// Today's date on the local wall clock (`TZ`), which decides today's schedule letter.
pub fn today_local() -> NaiveDate {
    Local::now().date_naive()
}

/// Epoch nanoseconds of the local midnight that starts `date` (what `--date` means elsewhere
/// in reel). Goes through `timefmt::parse_time` so both agree on zones and DST gaps.
pub fn local_midnight_ns(date: NaiveDate) -> Result<i64> {
    parse_time(&date.format("%Y-%m-%d").to_string(), DayEdge::Start)
}

/// A `--date` argument as a local calendar date: `YYYY-MM-DD`, or an RFC 3339 time whose local
/// date is taken.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    let t = s.trim();
    if t.len() == 10 {
        return crate::timefmt::parse_day(t);
    }
    let ns = parse_time(t, DayEdge::Start)?;
    let secs = ns.div_euclid(1_000_000_000);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|utc| utc.with_timezone(&Local).date_naive())
        .ok_or_else(|| Error::usage(format!("date {s:?} is out of range")))
}

/// A volume's schedule from `reel.toml`, parsed. `None` when it has none. A bad string (the
/// file is human-edited) is an error naming the volume and how to fix it.
pub fn volume_schedule(name: &str, v: &VolumeSettings) -> Result<Option<Schedule>> {
    match &v.schedule {
        None => Ok(None),
        Some(s) => Schedule::parse(s).map(Some).map_err(|e| {
            Error::usage(format!(
                "volume {name:?} in reel.toml: {e}; fix it with `reel volume set {name} --schedule STR`"
            ))
        }),
    }
}

/// One good line of a dumplist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumplistLine {
    /// Line number, from 1.
    pub line: usize,
    pub volume: String,
    pub schedule: Schedule,
    /// Whatever followed the schedule on the line (words and `#` comment), trimmed.
    pub comment: String,
}

/// Parse a Coda dumplist: per line a volume name, a schedule and an optional comment, separated
/// by white space. `#` starts a comment (a whole line or the end of one); blank lines are
/// skipped. Every bad line (no schedule, a bad letter, a bad volume name, a volume named twice)
/// is reported, all in one error, each as `line N: what is wrong`.
pub fn parse_dumplist(text: &str) -> Result<Vec<DumplistLine>> {
    let (lines, errors) = parse_lines(text);
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(bad_lines(errors))
    }
}

/// The errors of bad lines: (line number, message starting `line N: `); a line may have several.
type LineErrors = Vec<(usize, String)>;

/// All line errors as one usage error, in line order, counting lines (not errors).
fn bad_lines(mut errors: LineErrors) -> Error {
    errors.sort_by_key(|(n, _)| *n);
    let mut lines: Vec<usize> = errors.iter().map(|(n, _)| *n).collect();
    lines.dedup();
    let n = lines.len();
    let text: Vec<String> = errors.into_iter().map(|(_, m)| m).collect();
    Error::usage(format!(
        "{n} bad line{} in the dumplist:\n  {}",
        if n == 1 { "" } else { "s" },
        text.join("\n  ")
    ))
}

/// The good lines and the errors of the bad ones.
fn parse_lines(text: &str) -> (Vec<DumplistLine>, LineErrors) {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        // Neither a volume name nor a schedule can hold '#', so the first one starts a comment.
        let (data, hash_comment) = match raw.find('#') {
            Some(p) => (&raw[..p], raw[p + 1..].trim()),
            None => (raw, ""),
        };
        let mut words = data.split_whitespace();
        let Some(volume) = words.next() else {
            continue; // blank or comment-only
        };
        let Some(sched) = words.next() else {
            errors.push((line, format!(
                "line {line}: volume {volume:?} has no schedule: add day letters after it, e.g. `{volume} FIIIIII`"
            )));
            continue;
        };
        let words: Vec<&str> = words.collect();
        let mut comment = words.join(" ");
        if !hash_comment.is_empty() {
            if !comment.is_empty() {
                comment.push(' ');
            }
            comment.push_str(hash_comment);
        }
        let mut bad = false;
        if let Err(e) = validate_volume_name(volume) {
            errors.push((line, format!("line {line}: {e}")));
            bad = true;
        }
        let schedule = match Schedule::parse(sched) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push((line, format!("line {line}: volume {volume:?}: {e}")));
                None
            }
        };
        if let Some(first) = seen.get(volume) {
            errors.push((line, format!(
                "line {line}: volume {volume:?} is named twice (first on line {first}): keep one line per volume"
            )));
            bad = true;
        } else {
            seen.insert(volume.to_string(), line);
        }
        if let (false, Some(schedule)) = (bad, schedule) {
            out.push(DumplistLine {
                line,
                volume: volume.to_string(),
                schedule,
                comment,
            });
        }
    }
    (out, errors)
}

/// What importing one dumplist line did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleChange {
    pub volume: String,
    /// The schedule before (canonical string), if any.
    pub old: Option<String>,
    pub new: Schedule,
}

/// Set the schedules that `lines` name in `settings`, all or nothing: if any line names a
/// volume that `settings` does not hold, nothing is changed and the error names every such
/// line. Volumes the lines do not name keep their schedule. The caller saves the settings.
pub fn apply_dumplist(
    settings: &mut Settings,
    lines: &[DumplistLine],
) -> Result<Vec<ScheduleChange>> {
    let unknown = unknown_volumes(settings, lines);
    if !unknown.is_empty() {
        return Err(bad_lines(unknown));
    }
    let mut changes = Vec::with_capacity(lines.len());
    for l in lines {
        // Checked above: every volume exists.
        if let Some(v) = settings.volumes.get_mut(&l.volume) {
            let old = v.schedule.replace(l.schedule.to_string());
            changes.push(ScheduleChange {
                volume: l.volume.clone(),
                old,
                new: l.schedule.clone(),
            });
        }
    }
    Ok(changes)
}

/// Errors for the lines that name a volume `settings` does not hold.
fn unknown_volumes(settings: &Settings, lines: &[DumplistLine]) -> LineErrors {
    lines
        .iter()
        .filter(|l| !settings.volumes.contains_key(&l.volume))
        .map(|l| {
            (
                l.line,
                format!(
                    "line {}: no volume {:?} in this spool: add it with `reel volume add {} PATH` first, or remove the line",
                    l.line, l.volume, l.volume
                ),
            )
        })
        .collect()
}

/// `reel schedule import`: parse a dumplist and set the schedules it names in `settings`,
/// all or nothing. Malformed lines and lines naming unknown volumes are reported together,
/// in line order, and then `settings` is unchanged. The caller saves the settings.
pub fn import_dumplist(settings: &mut Settings, text: &str) -> Result<Vec<ScheduleChange>> {
    let (lines, mut errors) = parse_lines(text);
    errors.extend(unknown_volumes(settings, &lines));
    if !errors.is_empty() {
        return Err(bad_lines(errors));
    }
    apply_dumplist(settings, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn parse_and_display_round_trip() {
        for s in ["FIIIIII", "0325476", "F", "9", "FI0123456789"] {
            assert_eq!(Schedule::parse(s).unwrap().to_string(), s);
        }
        // Lower-case F and I are accepted and shown upper case.
        let s = Schedule::parse("fiIi").unwrap();
        assert_eq!(s.to_string(), "FIII");
        assert_eq!(s.len(), 4);
        assert_eq!("F2".parse::<Schedule>().unwrap().to_string(), "F2");
    }

    #[test]
    fn parse_errors_name_the_letter_and_position() {
        let e = msg(Schedule::parse("FIIXIII").unwrap_err());
        assert!(e.contains("'X'") && e.contains("position 4"), "{e}");
        let e = msg(Schedule::parse("FII II").unwrap_err());
        assert!(e.contains("' '") && e.contains("position 4"), "{e}");
        let e = msg(Schedule::parse("FIé").unwrap_err());
        assert!(e.contains("'é'") && e.contains("position 3"), "{e}");
        assert!(msg(Schedule::parse("").unwrap_err()).contains("empty"));
        assert!(Schedule::parse(&"I".repeat(64)).is_ok());
        let e = msg(Schedule::parse(&"I".repeat(65)).unwrap_err());
        assert!(e.contains("65 letters"), "{e}");
    }

    #[test]
    fn seven_letters_start_on_sunday() {
        // 2026-11-22 is a Sunday.
        let s = Schedule::parse("0325476").unwrap();
        let want = [0, 3, 2, 5, 4, 7, 6];
        for (i, w) in want.iter().enumerate() {
            let date = d(2026, 11, 22) + chrono::Days::new(i as u64);
            assert_eq!(s.level_on(date), *w, "{date}");
        }
        // The next Sunday starts again, and so did the one before.
        assert_eq!(s.level_on(d(2026, 11, 29)), 0);
        assert_eq!(s.level_on(d(2026, 11, 15)), 0);
        assert_eq!(s.level_on(d(2026, 11, 21)), 6);
        let f = Schedule::parse("FIIIIII").unwrap();
        assert_eq!(f.level_on(d(2026, 11, 22)), 0);
        assert_eq!(f.level_on(d(2026, 11, 23)), 1);
        assert_eq!(f.level_on(d(2026, 11, 28)), 1);
        // Agrees with the weekday rule on many dates, including before 1970.
        let mut date = d(1969, 12, 1);
        while date < d(1971, 1, 1) {
            use chrono::Datelike;
            assert_eq!(
                f.day_index(date),
                date.weekday().num_days_from_sunday() as usize,
                "{date}"
            );
            date = date.succ_opt().unwrap();
        }
    }

    #[test]
    fn other_lengths_cycle_from_1970_01_04() {
        let one = Schedule::parse("3").unwrap();
        assert_eq!(one.level_on(d(2026, 11, 22)), 3);
        assert_eq!(one.level_on(d(1900, 1, 1)), 3);
        let two = Schedule::parse("F1").unwrap();
        assert_eq!(two.level_on(d(1970, 1, 4)), 0);
        assert_eq!(two.level_on(d(1970, 1, 5)), 1);
        assert_eq!(two.level_on(d(1970, 1, 3)), 1);
        // 14 days: 2026-11-22 is day 20776 since 1970-01-04; 20776 mod 14 = 0.
        let fortnight = Schedule::parse("F123456I234567").unwrap();
        assert_eq!((d(2026, 11, 22) - d(1970, 1, 4)).num_days(), 20776);
        assert_eq!(fortnight.level_on(d(2026, 11, 22)), 0);
        assert_eq!(fortnight.level_on(d(2026, 11, 29)), 1);
        assert_eq!(fortnight.level_on(d(2026, 12, 5)), 7);
        assert_eq!(fortnight.level_on(d(2026, 12, 6)), 0);
        // Across a year end the cycle just continues.
        let three = Schedule::parse("F12").unwrap();
        let a = three.day_index(d(2026, 12, 31));
        assert_eq!(three.day_index(d(2027, 1, 1)), (a + 1) % 3);
    }

    #[test]
    fn local_midnight_is_the_start_of_the_date() {
        let ns = local_midnight_ns(d(2026, 11, 22)).unwrap();
        assert_eq!(ns, parse_time("2026-11-22", DayEdge::Start).unwrap());
        assert_eq!(parse_date("2026-11-22").unwrap(), d(2026, 11, 22));
        assert!(parse_date("tomorrow").is_err());
    }

    #[test]
    fn dumplist_good_lines_with_comments() {
        let text = "# Coda dumplist\n\
                    \n\
                    home   FIIIIII   user homes\n\
                    \tsrc 0325476 # the sources\n\
                    db F123 nightly db   # hot\n\
                    logs i\n   # indented comment\n";
        let lines = parse_dumplist(text).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0].line, 3);
        assert_eq!(lines[0].volume, "home");
        assert_eq!(lines[0].schedule.to_string(), "FIIIIII");
        assert_eq!(lines[0].comment, "user homes");
        assert_eq!(lines[1].line, 4);
        assert_eq!(lines[1].comment, "the sources");
        assert_eq!(lines[2].comment, "nightly db hot");
        assert_eq!(lines[3].schedule.to_string(), "I");
        assert_eq!(lines[3].comment, "");
        assert!(parse_dumplist("").unwrap().is_empty());
        assert!(parse_dumplist("# nothing\n\n").unwrap().is_empty());
    }

    #[test]
    fn dumplist_reports_every_bad_line() {
        let text = "home FIIIIII\n\
                    lonely\n\
                    src FIIXIII\n\
                    ../etc FIIIIII\n\
                    home 0325476\n\
                    ok F\n";
        let e = msg(parse_dumplist(text).unwrap_err());
        assert!(e.contains("4 bad lines"), "{e}");
        assert!(e.contains("line 2:") && e.contains("no schedule"), "{e}");
        assert!(e.contains("line 3:") && e.contains("position 4"), "{e}");
        assert!(
            e.contains("line 4:") && e.contains("bad volume name"),
            "{e}"
        );
        assert!(
            e.contains("line 5:") && e.contains("named twice (first on line 1)"),
            "{e}"
        );
        assert!(!e.contains("line 1:") && !e.contains("line 6:"), "{e}");
        let e = msg(parse_dumplist("a F\nb X\n").unwrap_err());
        assert!(e.contains("1 bad line in") && e.contains("line 2:"), "{e}");
        // A line with two faults (a bad name and a bad schedule) is one bad line.
        let e = parse_dumplist("bad/name FXZ\nhome FIIIIII\nsrv\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("2 bad lines"), "{e}");
        assert_eq!(e.matches("line 1:").count(), 2, "{e}");
    }

    fn settings_with(vols: &[(&str, Option<&str>)]) -> Settings {
        let mut volumes = BTreeMap::new();
        for (n, s) in vols {
            let mut v = VolumeSettings::new(PathBuf::from(format!("/srv/{n}")));
            v.schedule = s.map(str::to_string);
            volumes.insert(n.to_string(), v);
        }
        Settings {
            format: 1,
            chunker: Default::default(),
            compression_level: 3,
            checkpoint_mb: 256,
            min_share_percent: 50,
            keep_reports_days: 60,
            encryption: None,
            volumes,
        }
    }

    #[test]
    fn apply_is_all_or_nothing() {
        let mut s = settings_with(&[("home", Some("F")), ("src", None), ("keep", Some("I"))]);
        let before = s.clone();
        let lines = parse_dumplist("home FIIIIII\nghost F\nsrc 0325476\nalso F\n").unwrap();
        let e = msg(apply_dumplist(&mut s, &lines).unwrap_err());
        assert!(e.contains("line 2:") && e.contains("ghost"), "{e}");
        assert!(e.contains("line 4:") && e.contains("also"), "{e}");
        assert!(e.starts_with("2 bad lines"), "{e}");
        assert_eq!(s, before, "a failed import changed the settings");
        // Malformed and unknown lines are reported together, in line order.
        let e = msg(import_dumplist(&mut s, "ghost F\nhome FIX\nsrc F\n").unwrap_err());
        let l1 = e.find("line 1:").expect(&e);
        let l2 = e.find("line 2:").expect(&e);
        assert!(
            l1 < l2 && e.starts_with("2 bad lines") && !e.contains("line 3:"),
            "{e}"
        );
        assert_eq!(s, before, "a failed import changed the settings");

        let lines = parse_dumplist("home fiiiiii\nsrc 0325476\n").unwrap();
        let changes = apply_dumplist(&mut s, &lines).unwrap();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].old.as_deref(), Some("F"));
        assert_eq!(changes[1].old, None);
        assert_eq!(s.volumes["home"].schedule.as_deref(), Some("FIIIIII"));
        assert_eq!(s.volumes["src"].schedule.as_deref(), Some("0325476"));
        assert_eq!(s.volumes["keep"].schedule.as_deref(), Some("I"));
    }

    #[test]
    fn bad_stored_schedule_names_the_volume() {
        let s = settings_with(&[("home", Some("FXX")), ("src", None)]);
        let e = msg(volume_schedule("home", &s.volumes["home"]).unwrap_err());
        assert!(
            e.contains("\"home\"") && e.contains("reel volume set home"),
            "{e}"
        );
        assert_eq!(volume_schedule("src", &s.volumes["src"]).unwrap(), None);
    }
}
