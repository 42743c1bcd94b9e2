//! Rendering for people: aligned tables, UTC times, progress bars. Pure, so unit-tested here.

/// A table: a header row and rows of cells, columns left-aligned and two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each ending in a newline; trailing spaces trimmed so that the last
    /// column is never padded.
    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                line.push_str(cell);
                if i + 1 < columns {
                    line.push_str(&" ".repeat(width - cell.chars().count() + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Epoch milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC, to the second); `-` when absent.
pub fn time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "-".to_string();
    };
    barge_core::time::UtcTime::from_ms(ms).iso8601()
}

/// A duration in milliseconds as `1h02m03s`, `2m05s` or `4s`.
pub fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// A bar `width` cells wide, filled in proportion to `part` of `whole`.
pub fn bar(part: u64, whole: u64, width: usize) -> String {
    let filled = if whole == 0 {
        0
    } else {
        ((part.min(whole) as u128 * width as u128 + whole as u128 / 2) / whole as u128) as usize
    };
    // A part that is not nothing shows at least one cell.
    let filled = if part > 0 { filled.max(1) } else { filled };
    format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
}

/// `text` cut to `max` characters, with `…` when cut (table cells stay one line).
pub fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace(['\n', '\r'], " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut out: String = one_line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_the_last_is_not_padded() {
        let mut t = Table::new(&["ID", "NAME", "REASON"]);
        t.row(vec!["a".into(), "long-name".into(), "".into()]);
        t.row(vec!["bbbb".into(), "n".into(), "why".into()]);
        assert_eq!(
            t.render(),
            "ID    NAME       REASON\na     long-name\nbbbb  n          why\n"
        );
    }

    #[test]
    fn times_are_utc_seconds() {
        assert_eq!(time(None), "-");
        assert_eq!(time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(time(Some(1_795_276_800_999)), "2026-11-21T16:00:00Z");
        assert_eq!(time(Some(951_782_400_000)), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(4_200), "4s");
        assert_eq!(duration(125_000), "2m05s");
        assert_eq!(duration(3_723_000), "1h02m03s");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn bars_fill_in_proportion_and_show_any_part() {
        assert_eq!(bar(0, 10, 10), "..........");
        assert_eq!(bar(5, 10, 10), "#####.....");
        assert_eq!(bar(10, 10, 10), "##########");
        assert_eq!(bar(1, 1000, 10), "#.........");
        assert_eq!(bar(3, 0, 4), "#...");
        assert_eq!(bar(20, 10, 4), "####");
    }

    #[test]
    fn clip_keeps_cells_on_one_line() {
        assert_eq!(clip("a\nb", 10), "a b");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
