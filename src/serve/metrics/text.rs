//! The Prometheus text format 0.0.4: family headers, sample lines, escaped label values.

use std::fmt::Write;

use super::families::Row;
use crate::state::metrics::{HistogramData, DURATION_BUCKETS};

pub const PREFIX: &str = "test_machine_monitor_";

/// Escapes a label value: backslash, double quote and newline.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes `{a="x",b="y"}`, or nothing for an unlabeled series.
fn write_labels(out: &mut String, names: &[&str], values: &[&str]) {
    if names.is_empty() {
        return;
    }
    out.push('{');
    for (i, (n, v)) in names.iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(n);
        out.push_str("=\"");
        out.push_str(&escape_label(v));
        out.push('"');
    }
    out.push('}');
}

/// `# HELP` and `# TYPE` of a family.
pub fn header(out: &mut String, row: &Row) {
    let (name, help, kind) = (row.name, row.help, row.kind.as_str());
    let _ = write!(
        out,
        "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n"
    );
}

/// One sample of `row`, with its label values in the order of `row.labels`.
pub fn sample(out: &mut String, row: &Row, values: &[&str], v: f64) {
    line(out, row.name, "", row.labels, values, v);
}

/// One sample line of `name` with `suffix` (a histogram's `_bucket`, `_sum`, `_count`).
fn line(out: &mut String, name: &str, suffix: &str, names: &[&str], values: &[&str], v: f64) {
    debug_assert_eq!(names.len(), values.len(), "label values of {name}{suffix}");
    out.push_str(PREFIX);
    out.push_str(name);
    out.push_str(suffix);
    write_labels(out, names, values);
    out.push(' ');
    write_value(out, v);
    out.push('\n');
}

/// Go's `strconv.FormatFloat(v, 'g', ...)` spellings for the special values, which is
/// what the text format expects; Rust's `Display` is fine for the finite ones.
fn write_value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The samples of a labeled counter family.
pub fn counter(out: &mut String, row: &Row, series: Vec<(Vec<String>, u64)>) {
    for (values, v) in series {
        let vs: Vec<&str> = values.iter().map(String::as_str).collect();
        sample(out, row, &vs, v as f64);
    }
}

/// The samples of a histogram family: cumulative buckets, `_sum` and `_count`.
pub fn histogram(out: &mut String, row: &Row, mut series: Vec<(Vec<String>, HistogramData)>) {
    // An unlabeled histogram exists from the start (all zero), so that rate() and
    // histogram_quantile() have a series before the first observation.
    if series.is_empty() && row.labels.is_empty() {
        series.push((Vec::new(), HistogramData::empty()));
    }
    let mut names: Vec<&str> = row.labels.to_vec();
    names.push("le");
    let les: Vec<String> = (0..=DURATION_BUCKETS.len())
        .map(|i| {
            let mut le = String::new();
            match DURATION_BUCKETS.get(i) {
                Some(b) => write_value(&mut le, *b),
                None => le.push_str("+Inf"),
            }
            le
        })
        .collect();
    for (values, data) in series {
        let mut vs: Vec<&str> = values.iter().map(String::as_str).collect();
        let mut cumulative = 0;
        for (n, le) in data.buckets.iter().zip(&les) {
            cumulative += n;
            vs.push(le);
            line(out, row.name, "_bucket", &names, &vs, cumulative as f64);
            vs.pop();
        }
        line(out, row.name, "_sum", row.labels, &vs, data.sum);
        line(out, row.name, "_count", row.labels, &vs, data.count as f64);
    }
}
