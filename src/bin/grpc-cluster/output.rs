//! Printing: aligned tables for people, JSON for scripts.

use std::io::Write;

/// A table printed with its columns aligned.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The table as text: one line per row under the header, columns padded
    /// to their widest cell.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Prints `text` on stdout, flushed (a pipe reader sees each line at once).
pub(crate) fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    // A closed stdout (a pipe whose reader left) is not worth a panic.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &serde_json::Value) {
    print(&format!("{value}\n"));
}

/// `""` shown as `-` in a table.
pub(crate) fn cell(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_their_widest_cell_and_lines_not_padded_at_the_end() {
        let mut table = Table::new(vec!["ID", "ADDR", "LEASE"]);
        table.push(vec!["echo-1".into(), "127.0.0.1:1".into(), "static".into()]);
        table.push(vec!["e2".into(), "10.0.0.2:50051".into(), "9s".into()]);
        assert_eq!(
            table.render(),
            "ID      ADDR            LEASE\n\
             echo-1  127.0.0.1:1     static\n\
             e2      10.0.0.2:50051  9s\n"
        );
        assert_eq!(cell(""), "-");
    }
}
