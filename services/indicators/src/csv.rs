//! CSV as French spreadsheets open it: UTF-8 with a byte-order mark, `;`
//! between fields, a decimal comma, Paris times.

use guichet_platform::calendar::to_paris;
use guichet_proto::convert::datetime;

pub struct Csv {
    out: String,
}

fn field(s: &str) -> String {
    if s.contains([';', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

impl Csv {
    pub fn new(header: &[&str]) -> Csv {
        let mut c = Csv {
            out: String::from("\u{feff}"),
        };
        c.row(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
        c
    }

    pub fn row(&mut self, fields: &[String]) {
        let line: Vec<String> = fields.iter().map(|f| field(f)).collect();
        self.out.push_str(&line.join(";"));
        self.out.push_str("\r\n");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// `1234,5` (at most 4 decimals, no trailing zeros).
pub fn number(v: f64) -> String {
    let s = format!("{:.4}", v);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.replace('.', ",")
}

/// `2026-09-01 08:30` in Paris time.
pub fn paris(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(datetime)
        .map(|t| to_paris(t).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn french_csv() {
        let mut c = Csv::new(&["a", "b"]);
        c.row(&["x;y".into(), number(0.5)]);
        c.row(&["\"q\"".into(), number(12.0)]);
        assert_eq!(
            c.finish(),
            "\u{feff}a;b\r\n\"x;y\";0,5\r\n\"\"\"q\"\"\";12\r\n"
        );
        assert_eq!(number(-0.25), "-0,25");
    }
}
