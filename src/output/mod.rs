//! Record output in formats other tools read: CSV (with a header), JSON lines, and Zeek's
//! ASCII log format (TSV with `#` header lines, readable by zeek-cut and Zeek's log readers).

use std::fmt::Write as _;
use std::io::{self, Write};

use crate::features::{Cell, Column};

/// Output format of flow records.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Zeek ASCII log (tab-separated, `#fields`/`#types` header, `#close` footer).
    Zeek,
}

/// Writes rows of one column layout.
pub struct RecordWriter<W: Write> {
    out: W,
    format: Format,
    /// JSON lines: each column's `"name":`, escaped once.
    keys: Vec<String>,
    /// The last row rendered, newline included.
    line: String,
}

/// Civil date and time (UTC) of a Unix time, for Zeek's `#open`/`#close` stamps.
fn zeek_stamp(t: crate::capture::Timestamp) -> String {
    let (y, m, d, hh, mm, ss, _) = t.civil();
    format!("{y:04}-{m:02}-{d:02}-{hh:02}-{mm:02}-{ss:02}")
}

/// Numbers are formatted with `itoa` and `ryu` (shortest round-trip floats): the standard
/// formatter was the largest cost of writing records.
///
/// Most cells of a record are counts below 100 (flags, small counts, the `ct_*` windows): those
/// are pushed as characters, since copying a formatted one- or two-digit buffer costs a call
/// to `memcpy` per cell.
#[inline]
fn push_u64(v: u64, line: &mut String) {
    if v < 10 {
        line.push(char::from(b'0' + v as u8));
    } else if v < 100 {
        line.push(char::from(b'0' + (v / 10) as u8));
        line.push(char::from(b'0' + (v % 10) as u8));
    } else {
        line.push_str(itoa::Buffer::new().format(v));
    }
}

fn push_f64(v: f64, line: &mut String) {
    // Whole numbers as integers. The test is a round trip through i64 rather than
    // `fract() == 0.0`: without SSE4.1 (the baseline x86-64 target) `fract` is a call into
    // libm's `trunc`, and it showed in the profile. NaN fails `abs() < 1e15`; -0.0 writes "0".
    if v.abs() < 1e15 && (v as i64) as f64 == v {
        if v >= 0.0 {
            push_u64(v as u64, line);
        } else {
            line.push_str(itoa::Buffer::new().format(v as i64));
        }
    } else {
        line.push_str(ryu::Buffer::new().format(v));
    }
}

/// Seconds with microseconds, as Zeek writes `ts`.
fn push_time(t: crate::capture::Timestamp, line: &mut String) {
    let secs = t.0.div_euclid(1_000_000_000);
    let micros = (t.0.rem_euclid(1_000_000_000) / 1000) as u64;
    line.push_str(itoa::Buffer::new().format(secs));
    // ".uuuuuu" built whole and pushed once (a push per character checks capacity each time).
    let mut frac = [b'.', b'0', b'0', b'0', b'0', b'0', b'0'];
    let mut m = micros;
    for d in frac[1..].iter_mut().rev() {
        *d = b'0' + (m % 10) as u8;
        m /= 10;
    }
    line.push_str(std::str::from_utf8(&frac).expect("ASCII digits"));
}

/// An address as `Display` writes it; IPv4 without the formatter (a large share of writing a
/// record went to formatting its two addresses through it).
fn push_addr(a: std::net::IpAddr, line: &mut String) {
    match a {
        std::net::IpAddr::V4(v4) => {
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    line.push('.');
                }
                if o >= 100 {
                    line.push(char::from(b'0' + o / 100));
                }
                if o >= 10 {
                    line.push(char::from(b'0' + o / 10 % 10));
                }
                line.push(char::from(b'0' + o % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(line, "{v6}");
        }
    }
}

fn csv_field(s: &str, line: &mut String) {
    if s.bytes().any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r')) {
        line.push('"');
        line.push_str(&s.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(s);
    }
}

fn json_string(s: &str, line: &mut String) {
    line.push('"');
    // Runs without anything to escape are copied whole; the bytes escaped are ASCII, so
    // the cuts fall between characters.
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b if b < 0x20 => "",
            _ => continue,
        };
        line.push_str(&s[start..i]);
        if escaped.is_empty() {
            let _ = write!(line, "\\u{:04x}", b);
        } else {
            line.push_str(escaped);
        }
        start = i + 1;
    }
    line.push_str(&s[start..]);
    line.push('"');
}

impl<W: Write> RecordWriter<W> {
    /// Starts a file: writes the header of the format. `log_path` is Zeek's `#path` (`conn`).
    pub fn new(
        mut out: W,
        format: Format,
        columns: &[Column],
        log_path: &str,
    ) -> io::Result<RecordWriter<W>> {
        match format {
            Format::Csv => {
                let mut line = String::new();
                for (i, c) in columns.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    csv_field(&c.name, &mut line);
                }
                writeln!(out, "{line}")?;
            }
            Format::Jsonl => {}
            Format::Zeek => {
                writeln!(out, "#separator \\x09")?;
                writeln!(out, "#set_separator\t,")?;
                writeln!(out, "#empty_field\t(empty)")?;
                writeln!(out, "#unset_field\t-")?;
                writeln!(out, "#path\t{log_path}")?;
                writeln!(out, "#open\t{}", zeek_stamp(crate::capture::Timestamp::wall_now()))?;
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                writeln!(out, "#fields\t{}", names.join("\t"))?;
                let types: Vec<&str> = columns.iter().map(|c| c.zeek_type).collect();
                writeln!(out, "#types\t{}", types.join("\t"))?;
            }
        }
        let keys = match format {
            Format::Jsonl => columns
                .iter()
                .map(|c| {
                    let mut k = String::new();
                    json_string(&c.name, &mut k);
                    k.push(':');
                    k
                })
                .collect(),
            _ => Vec::new(),
        };
        Ok(RecordWriter { out, format, keys, line: String::with_capacity(512) })
    }

    /// Writes one row (one cell per column).
    pub fn write(&mut self, cells: &[Cell]) -> io::Result<()> {
        self.render(cells);
        self.out.write_all(self.line.as_bytes())
    }

    /// Renders one row without writing it: [`Self::last_line`] has it (a JSON line to hand
    /// elsewhere, as the flows topic takes it).
    pub fn render(&mut self, cells: &[Cell]) {
        self.line.clear();
        let line = &mut self.line;
        match self.format {
            Format::Csv => {
                for (i, cell) in cells.iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    match cell {
                        Cell::Num(v) => push_f64(*v, line),
                        Cell::Count(v) => push_u64(*v, line),
                        Cell::Text(t) => csv_field(t, line),
                        Cell::Str(s) => csv_field(s, line),
                        Cell::Short(s) => csv_field(s.as_str(), line),
                        Cell::Addr(a) => push_addr(*a, line),
                        Cell::Port(p) => push_u64(*p as u64, line),
                        Cell::Time(t) => push_time(*t, line),
                        Cell::Unset => {}
                    }
                }
            }
            Format::Jsonl => {
                line.push('{');
                for (i, (key, cell)) in self.keys.iter().zip(cells).enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    line.push_str(key);
                    match cell {
                        Cell::Num(v) if v.is_finite() => push_f64(*v, line),
                        Cell::Num(_) | Cell::Unset => line.push_str("null"),
                        Cell::Count(v) => push_u64(*v, line),
                        Cell::Text(t) => json_string(t, line),
                        Cell::Str(s) => json_string(s, line),
                        Cell::Short(s) => json_string(s.as_str(), line),
                        Cell::Addr(a) => {
                            line.push('"');
                            push_addr(*a, line);
                            line.push('"');
                        }
                        Cell::Port(p) => push_u64(*p as u64, line),
                        Cell::Time(t) => push_time(*t, line),
                    }
                }
                line.push('}');
            }
            Format::Zeek => {
                for (i, cell) in cells.iter().enumerate() {
                    if i > 0 {
                        line.push('\t');
                    }
                    match cell {
                        Cell::Num(v) => {
                            let _ = write!(line, "{v:.6}");
                        }
                        Cell::Count(v) => push_u64(*v, line),
                        Cell::Text("") => line.push_str("(empty)"),
                        Cell::Text(t) => line.push_str(t),
                        Cell::Str(s) if s.is_empty() => line.push_str("(empty)"),
                        Cell::Str(s) => line.push_str(s),
                        Cell::Short(s) if s.as_str().is_empty() => line.push_str("(empty)"),
                        Cell::Short(s) => line.push_str(s.as_str()),
                        Cell::Addr(a) => push_addr(*a, line),
                        Cell::Port(p) => push_u64(*p as u64, line),
                        Cell::Time(t) => push_time(*t, line),
                        Cell::Unset => line.push('-'),
                    }
                }
            }
        }
        line.push('\n');
    }

    /// The row last written or rendered, without its newline.
    pub fn last_line(&self) -> &str {
        self.line.strip_suffix('\n').unwrap_or(&self.line)
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// The writer under the records (a `Vec<u8>` one renders records to hand elsewhere).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Ends the file (Zeek's `#close` line) and flushes.
    pub fn finish(mut self) -> io::Result<W> {
        if self.format == Format::Zeek {
            writeln!(self.out, "#close\t{}", zeek_stamp(crate::capture::Timestamp::wall_now()))?;
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_read_back_as_written() {
        for s in ["", "plain", "q\"uote", "back\\slash", "tab\tnl\ncr\r\u{1}", "é😀\"x", "\"\""]
        {
            let mut line = String::new();
            json_string(s, &mut line);
            let back: String = serde_json::from_str(&line).expect(&line);
            assert_eq!(back, s, "{line}");
        }
        let mut line = String::new();
        json_string("a\u{1f}b", &mut line);
        assert_eq!(line, "\"a\\u001fb\"");
    }

    fn cols() -> Vec<Column> {
        ["ts", "note", "n"]
            .iter()
            .map(|n| Column { name: n.to_string(), zeek_type: "string", feature: None })
            .collect()
    }

    fn render(format: Format) -> String {
        let mut w = RecordWriter::new(Vec::new(), format, &cols(), "conn").unwrap();
        w.write(&[
            Cell::Time(crate::capture::Timestamp(1_500_000_000_250_000_000)),
            Cell::Str("a,\"b\"".into()),
            Cell::Num(0.5),
        ])
        .unwrap();
        w.write(&[Cell::Unset, Cell::Text(""), Cell::Count(3)]).unwrap();
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in ["0.0.0.0", "10.0.1.22", "255.255.255.255", "192.168.0.100", "::1", "fe80::1:2"] {
            let a: std::net::IpAddr = a.parse().unwrap();
            let mut line = String::new();
            push_addr(a, &mut line);
            assert_eq!(line, a.to_string());
        }
    }

    /// Whole numbers below 1e15 as integers, the rest as ryu's shortest round trip; NaN,
    /// infinities, -0.0 and the edges of the integer range included.
    #[test]
    fn reals_are_written_as_integers_when_whole() {
        let reference = |v: f64| {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                format!("{}", v as i64)
            } else {
                ryu::Buffer::new().format(v).to_string()
            }
        };
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            -0.5,
            99.0,
            100.0,
            1e15,
            -1e15,
            999_999_999_999_999.0,
            -999_999_999_999_999.0,
            1e15 - 0.5,
            4503599627370495.5,
            1e-300,
            1e300,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            711.2375533428166,
        ];
        let mut x = 0.37_f64;
        for _ in 0..2000 {
            x = (x * 3.9 * (1.0 - x)).clamp(1e-9, 1.0 - 1e-9);
            values.push((x * 1e6).round());
            values.push(x * 1e6);
            values.push(-(x * 1e12).floor());
        }
        for v in values {
            let mut line = String::new();
            push_f64(v, &mut line);
            assert_eq!(line, reference(v), "{v:?}");
        }
    }

    #[test]
    fn csv_quotes_and_header() {
        assert_eq!(render(Format::Csv), "ts,note,n\n1500000000.250000,\"a,\"\"b\"\"\",0.5\n,,3\n");
    }

    #[test]
    fn jsonl_is_valid_json() {
        for line in render(Format::Jsonl).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(v.get("note").is_some());
        }
    }

    /// A rendered row is the line `write` would write, and nothing is written; odd column
    /// names are escaped in the keys.
    #[test]
    fn render_gives_the_written_line_without_writing() {
        let mut c = cols();
        c[1].name = "no\"te".into();
        let row = [Cell::Str("x\ny".into()), Cell::Num(1.5), Cell::Count(2)];
        let mut w = RecordWriter::new(Vec::new(), Format::Jsonl, &c, "").unwrap();
        w.render(&row);
        let rendered = w.last_line().to_owned();
        assert!(w.get_mut().is_empty());
        w.write(&row).unwrap();
        assert_eq!(String::from_utf8(w.get_mut().clone()).unwrap(), format!("{rendered}\n"));
        let v: serde_json::Value = serde_json::from_str(&rendered).unwrap();
        assert_eq!(v["no\"te"], 1.5);
        assert_eq!(v["ts"], "x\ny");
    }

    #[test]
    fn zeek_log_layout() {
        let s = render(Format::Zeek);
        assert!(s.starts_with("#separator \\x09\n#set_separator\t,\n"));
        assert!(s.contains("#fields\tts\tnote\tn\n#types\tstring\tstring\tstring\n"));
        assert!(s.contains("1500000000.250000\ta,\"b\"\t0.500000\n-\t(empty)\t3\n"));
        assert!(s.lines().last().unwrap().starts_with("#close\t"));
    }

    #[test]
    fn numbers_and_times() {
        let mut l = String::new();
        for v in [0.0, 12.0, 0.5, 1.25e-5, -3.0, f64::NAN] {
            push_f64(v, &mut l);
            l.push(' ');
        }
        push_time(crate::capture::Timestamp(-1_500_000), &mut l);
        l.push(' ');
        push_time(crate::capture::Timestamp(7_000_123_000), &mut l);
        assert_eq!(l, "0 12 0.5 0.0000125 -3 NaN -1.998500 7.000123");
        // Every width of count as the standard formatter writes it, and every octet.
        for v in [0, 7, 9, 10, 42, 99, 100, 101, 999, 1000, 65_535, 999_999_999_999_999, u64::MAX] {
            let (mut count, mut num) = (String::new(), String::new());
            push_u64(v, &mut count);
            assert_eq!(count, v.to_string());
            if v < 1_000_000_000_000_000 {
                push_f64(v as f64, &mut num);
                assert_eq!(num, count);
            }
        }
        for o in 0..=255u8 {
            let a = std::net::IpAddr::from([o, 255 - o, o / 3, 9]);
            let mut l = String::new();
            push_addr(a, &mut l);
            assert_eq!(l, a.to_string());
        }
    }

    #[test]
    fn zeek_stamp_civil_date() {
        assert_eq!(zeek_stamp(crate::capture::Timestamp(0)), "1970-01-01-00-00-00");
        assert_eq!(
            zeek_stamp(crate::capture::Timestamp(1_540_469_302_000_000_000)),
            "2018-10-25-12-08-22"
        );
    }
}
