//! Tables for people: the named columns of JSON rows, laid out by comfy-table (display width,
//! so wide characters line up), with every cell bounded and made inert first.

use comfy_table::{CellAlignment, ColumnConstraint, ContentArrangement, Table, presets};
use serde_json::Value;

/// The longest cell a table shows, in characters.
pub const CELL_MAX: usize = 80;

/// Text as a table shows it: at most [`CELL_MAX`] of its characters, control characters
/// escaped (a name stored with an ANSI escape must not drive the terminal).
pub fn cell_text(text: &str) -> String {
    let long = text.chars().nth(CELL_MAX).is_some();
    let kept = if long { CELL_MAX - 1 } else { CELL_MAX };
    let mut shown = String::new();
    for c in text.chars().take(kept) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if long {
        shown.push('…');
    }
    shown
}

/// A JSON value as one cell: strings as they are, lists comma-joined, null as `-`.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => cell_text(s),
        Value::Array(items) => cell_text(
            &items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Null => "-".to_owned(),
        other => cell_text(&other.to_string()),
    }
}

/// `columns` of `rows` as aligned text: an upper-case header line, then one line per row, columns
/// two spaces apart, no borders and no trailing spaces (what `kubectl get` prints).
pub fn render(columns: &[&str], rows: &[Value]) -> String {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| c.to_uppercase()));
    for row in rows {
        table.add_row(columns.iter().map(|c| cell(&row[*c])));
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
        column.set_cell_alignment(CellAlignment::Left);
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_bounded_and_inert() {
        let long = "k".repeat(65_536);
        assert_eq!(cell_text(&long).chars().count(), CELL_MAX);
        assert!(cell_text(&long).ends_with("k…"));
        assert_eq!(cell_text(&"k".repeat(CELL_MAX)), "k".repeat(CELL_MAX));
        assert_eq!(cell_text("\u{1b}[2Jowned"), "\\u{1b}[2Jowned");
        assert_eq!(cell_text("deploy bot — CI"), "deploy bot — CI");
        // Stored before names were bounded: a huge name and a terminal escape.
        let text = render(
            &["id", "name"],
            &[
                json!({"id": "a", "name": long}),
                json!({"id": "b", "name": "\u{1b}[2Jowned"}),
            ],
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(text.lines().all(|l| l.chars().count() < CELL_MAX + 10));
    }

    #[test]
    fn columns_align_by_display_width() {
        let text = render(
            &["name", "scope", "tags"],
            &[
                json!({"name": "東京", "scope": "a/b", "tags": ["x", "y"]}),
                json!({"name": "bot", "scope": null, "tags": []}),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME  SCOPE  TAGS");
        // 東京 is two columns wide each: the next column starts where it does for "bot".
        assert_eq!(lines[1], "東京  a/b    x,y");
        assert_eq!(lines[2], "bot   -");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(render(&["id", "project"], &[]), "ID  PROJECT");
    }
}
