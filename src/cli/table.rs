//! Human output of the CLI: a table of chosen fields of JSON rows (the same values `--json`
//! prints), and a field list for one object.

use serde_json::Value;

/// A column: its header and the JSON pointer of its value in a row.
pub type Column = (&'static str, &'static str);

fn cell(row: &Value, pointer: &str) -> String {
    match row.pointer(pointer) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Rows as a table with aligned columns; control characters are shown escaped, so a value
/// cannot forge lines.
pub fn render(rows: &[Value], columns: &[Column]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|(_, p)| cell(r, p).escape_debug().to_string())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(columns.iter().map(|(h, _)| *h).collect())];
    for r in &cells {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n")
}

/// One object as `field: value` lines, in the given order.
pub fn fields(obj: &Value, columns: &[Column]) -> String {
    let width = columns.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
    columns
        .iter()
        .map(|(h, p)| format!("{h:<width$}  {}", cell(obj, p).escape_debug()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_values_cannot_forge_lines() {
        let rows = vec![
            json!({"id": "a", "name": "x\ny", "n": 3, "tags": ["p", "q"]}),
            json!({"id": "bbbb", "name": null}),
        ];
        let t = render(
            &rows,
            &[
                ("ID", "/id"),
                ("NAME", "/name"),
                ("N", "/n"),
                ("TAGS", "/tags"),
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert_eq!(lines[0], "ID    NAME  N  TAGS");
        assert_eq!(lines[1], "a     x\\ny  3  p,q");
        assert_eq!(lines[2], "bbbb  -     -  -");
    }
}
