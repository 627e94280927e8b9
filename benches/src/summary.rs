//! The report's closing table: each headline figure of the run, the reference measured
//! beside it (or the limit it is held to), the ratio, and the target, so one glance says
//! which targets this run met.

use std::sync::Mutex;

/// One headline figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub figure: String,
    /// The figure, with its unit.
    pub value: String,
    /// What it is compared with: a peer measured in the same run, or a limit.
    pub reference: String,
    /// The figure divided by the reference, when a ratio is what the target names.
    pub ratio: Option<f64>,
    /// The target, in words.
    pub target: String,
    /// Whether the target was met in this run (`None`: no target).
    pub met: Option<bool>,
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

/// Adds a row to the closing table.
pub fn record(row: Row) {
    ROWS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(row);
}

/// The closing table of every row recorded so far, or nothing when none was.
pub fn render() -> String {
    let rows = ROWS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if rows.is_empty() {
        return String::new();
    }
    let width =
        |pick: fn(&Row) -> &str, header: &str| rows.iter().map(|r| pick(r).len()).max().unwrap_or(0).max(header.len());
    let (f, v, r, t) = (
        width(|r| &r.figure, "figure"),
        width(|r| &r.value, "value"),
        width(|r| &r.reference, "reference"),
        width(|r| &r.target, "target"),
    );
    let mut out = format!(
        "\nSummary of this run\n{:<f$}  {:>v$}  {:<r$}  {:>8}  {:<t$}  met\n",
        "figure", "value", "reference", "ratio", "target"
    );
    for row in rows.iter() {
        let ratio = row.ratio.map_or("-".to_owned(), |x| format!("{x:.2}"));
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        out += &format!(
            "{:<f$}  {:>v$}  {:<r$}  {ratio:>8}  {:<t$}  {met}\n",
            row.figure, row.value, row.reference, row.target
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_row_with_its_ratio_and_whether_its_target_was_met() {
        record(Row {
            figure: "in-process rt/s".into(),
            value: "500000".into(),
            reference: "kameo 1000000".into(),
            ratio: Some(0.5),
            target: ">= 0.9 of kameo".into(),
            met: Some(false),
        });
        record(Row {
            figure: "lookup p99".into(),
            value: "14 us".into(),
            reference: "-".into(),
            ratio: None,
            target: "< 50 us".into(),
            met: Some(true),
        });
        let table = render();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines.iter().any(|l| l.starts_with("in-process rt/s") && l.contains("0.50") && l.ends_with("NO")),
            "{table}"
        );
        assert!(lines.iter().any(|l| l.starts_with("lookup p99") && l.ends_with("yes")), "{table}");
    }
}
