//! A plain text table with aligned columns, for the summaries the demos print.

use std::fmt;

/// Rows of text under a header; numbers (cells that parse as one) are right-aligned.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub fn new<const N: usize>(header: [&str; N]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    /// Adds a row; missing cells are blank, extra ones are dropped.
    pub fn row<const N: usize>(&mut self, cells: [String; N]) {
        let mut row: Vec<String> = cells.into_iter().take(self.header.len()).collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// How many rows it has.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

fn numeric(cell: &str) -> bool {
    !cell.is_empty() && cell.trim_end_matches('%').replace(['.', ',', '-'], "").chars().all(|c| c.is_ascii_digit())
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|i| {
                let cells = self.rows.iter().map(|r| r[i].chars().count());
                cells.chain([self.header[i].chars().count()]).max().unwrap_or(0)
            })
            .collect();
        let line = |f: &mut fmt::Formatter<'_>, cells: &[String]| -> fmt::Result {
            let mut out = String::new();
            for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                match numeric(cell) {
                    true => out.push_str(&format!("{cell:>width$}")),
                    false => out.push_str(&format!("{cell:<width$}")),
                }
            }
            writeln!(f, "{}", out.trim_end())
        };
        line(f, &self.header)?;
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        line(f, &rule)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut table = Table::new(["name", "price"]);
        table.row(["ana".into(), "12.50".into()]);
        table.row(["bartholomew".into(), "7.00".into()]);
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "name         price");
        assert_eq!(lines[2], "ana          12.50");
        assert_eq!(lines[3], "bartholomew   7.00");
    }
}
