//! JSON output: every `--json` document is printed here, so the conventions of docs/CLI.md
//! hold in one place: a top-level object carries `reel_version` (the reel that printed it),
//! times are RFC 3339, durations are seconds.

use reel::timefmt::format_rfc3339;
use serde_json::Value;

/// The version this reel reports in its documents (`reel --version`).
pub const REEL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Print `v` as one pretty-printed JSON document on standard output. An object gets
/// `reel_version`, unless it has a field of that name already; an array is printed as it is
/// (its documents predate the field, and turning them into objects would break every script
/// that reads them).
pub fn print_json(v: &Value) {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.entry("reel_version")
            .or_insert_with(|| REEL_VERSION.into());
    }
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}

/// A duration in nanoseconds as the seconds the documents give.
pub fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// A time in epoch nanoseconds as the RFC 3339 string the documents give.
pub fn time(ns: i64) -> Value {
    format_rfc3339(ns).into()
}

/// `a / b`, or null when `b` is 0: a ratio of sizes.
pub fn ratio(a: u64, b: u64) -> Value {
    if b == 0 {
        Value::Null
    } else {
        (a as f64 / b as f64).into()
    }
}
