//! Tables and JSON on stdout.

use anyhow::{Context, Result};
use serde::Serialize;

/// Prints `value` as pretty JSON followed by a newline.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    println!("{text}");
    Ok(())
}

/// Formats rows under headers in left-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Control characters a server could use to mess with the terminal are shown
/// escaped in tables.
pub fn cell(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let t = table(
            &["NAME", "STATUS"],
            &[
                vec!["a".into(), "running".into()],
                vec!["longer".into(), "cold".into()],
            ],
        );
        assert_eq!(t, "NAME    STATUS\na       running\nlonger  cold\n");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(cell("a\x1b[2Jb\n"), "a\\u{1b}[2Jb\\n");
    }
}
