//! Result tables.

/// Column separator: two spaces.
const GAP: &str = "  ";

/// A table of strings: a header row, then rows, each column right-aligned and as
/// wide as its widest cell (counted in characters, so `–` and `µ` take one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    headers: Vec<String>,
    // Invariant: every row has as many cells as there are headers.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers and no rows.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Table {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row. Panics unless it has one cell per header.
    pub fn push<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let row: Vec<String> = cells.into_iter().map(Into::into).collect();
        assert_eq!(
            row.len(),
            self.headers.len(),
            "a row of {} cells in a table of {} columns: {row:?}",
            row.len(),
            self.headers.len()
        );
        self.rows.push(row);
    }

    /// The table as lines, each ending in a newline, none with trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|cell| width(cell)).collect();
        for row in &self.rows {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(width(cell));
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(cell, &width)| format!("{cell:>width$}"))
                .collect();
            out.push_str(&cells.join(GAP));
            out.push('\n');
        }
        out
    }

    /// Prints [`Table::render`] to stdout.
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

fn width(cell: &str) -> usize {
    cell.chars().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each column is as wide as its widest cell, header or value, and every cell is
    /// right-aligned in it; multi-byte characters count once.
    #[test]
    fn columns_are_right_aligned_and_sized_to_content() {
        let mut table = Table::new(["n", "proposals/s", "spread"]);
        table.push(["1", "9,400", "9,100 – 9,700"]);
        table.push(["1024", "438,000", "1 – 2"]);
        let expected = [
            "   n  proposals/s         spread",
            "   1        9,400  9,100 – 9,700",
            "1024      438,000          1 – 2",
        ];
        assert_eq!(
            table.render(),
            expected.map(|line| format!("{line}\n")).concat()
        );
    }

    /// With no rows, the headers alone, each as wide as itself.
    #[test]
    fn headers_alone() {
        let table = Table::new(["a", "bb"]);
        assert_eq!(table.render(), "a  bb\n");
    }

    #[test]
    #[should_panic(expected = "a row of 1 cells in a table of 2 columns")]
    fn a_short_row_panics() {
        Table::new(["a", "b"]).push(["1"]);
    }
}
