//! HTML pieces: escaping, the page shell with its CSP and CSS, figure wrappers and the
//! accessible tables of plotted values.

use std::fmt::Write as _;

/// The Content-Security-Policy of every page: nothing is fetched, no script runs; only inline
/// styles and `data:` images are allowed.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";

/// Escapes text for HTML element content and double-quoted attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for a `data-value` attribute: full precision, empty when undefined.
pub(crate) fn data_num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v}"),
        _ => String::new(),
    }
}

/// A number for people: `decimals` places, an en dash when undefined.
pub(crate) fn num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => fixed(v, decimals),
        _ => "–".into(),
    }
}

/// `v` with `decimals` places, without the minus sign of a value that rounds to zero
/// (`-0.00` reads as a negative score).
pub(crate) fn fixed(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    match s.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => s,
    }
}

/// A token count for people, with thin thousands separators.
pub(crate) fn tokens(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let r = v.round();
    if (v - r).abs() > 1e-9 {
        return format!("{v:.1}");
    }
    let s = format!("{}", r.abs() as u128);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{2009}');
        }
        out.push(ch);
    }
    if r < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A table of plotted values: one row per series (or heatmap row, its name in the row's `<th>`),
/// one column per x (its name in the header). Each cell carries `data-value` (full precision;
/// empty when undefined) and shows the value rounded.
pub(crate) struct ValueTable {
    pub caption: String,
    pub row_header: String,
    pub cols: Vec<String>,
    pub rows: Vec<(String, Vec<Option<f64>>)>,
    pub decimals: usize,
}

impl ValueTable {
    pub(crate) fn render(&self, figure_id: &str, out: &mut String) {
        let _ = write!(
            out,
            "<details class=\"figure-data\"><summary>Plotted values</summary>\
             <table class=\"data\" data-figure=\"{}\"><caption>{}</caption><thead><tr><th scope=\"col\">{}</th>",
            escape(figure_id),
            escape(&self.caption),
            escape(&self.row_header)
        );
        for c in &self.cols {
            let _ = write!(out, "<th scope=\"col\">{}</th>", escape(c));
        }
        out.push_str("</tr></thead><tbody>");
        for (name, values) in &self.rows {
            let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(name));
            for v in values.iter().take(self.cols.len()) {
                let _ = write!(
                    out,
                    "<td data-value=\"{}\">{}</td>",
                    data_num(*v),
                    num(*v, self.decimals)
                );
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table></details>");
    }
}

/// What a figure holds: its chart and table, or a note saying why it has none.
pub(crate) enum FigureBody {
    /// An inline SVG and the table of its values.
    Chart { svg: String, table: ValueTable },
    /// Why the figure cannot be drawn for this snapshot (e.g. no second language).
    Note(String),
}

/// One `<figure id="fig-…" class="moescope-figure">` with its caption.
pub(crate) struct Figure {
    pub id: &'static str,
    pub caption: String,
    pub body: FigureBody,
    /// Extra `data-*` attributes (name, value) on the figure element.
    pub attrs: Vec<(&'static str, String)>,
}

impl Figure {
    pub(crate) fn render(&self, out: &mut String) {
        let status = match self.body {
            FigureBody::Chart { .. } => "chart",
            FigureBody::Note(_) => "note",
        };
        let _ = write!(
            out,
            "<figure id=\"{}\" class=\"moescope-figure\" data-status=\"{status}\"",
            self.id
        );
        for (k, v) in &self.attrs {
            let _ = write!(out, " data-{k}=\"{}\"", escape(v));
        }
        out.push('>');
        match &self.body {
            FigureBody::Chart { svg, table } => {
                out.push_str(svg);
                let _ = write!(out, "<figcaption>{}</figcaption>", self.caption);
                table.render(self.id, out);
            }
            FigureBody::Note(note) => {
                let _ = write!(
                    out,
                    "<p class=\"note\">{}</p><figcaption>{}</figcaption>",
                    escape(note),
                    self.caption
                );
            }
        }
        out.push_str("</figure>\n");
    }
}

/// The page's style sheet (inline; the CSP allows inline styles only).
pub(crate) const CSS: &str = "\
:root{color-scheme:light}\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1100px;padding:1rem 1.5rem 3rem;color:#1b1b1b;background:#fff;line-height:1.45}\
h1{font-size:1.5rem;margin:.5rem 0}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}\
table{border-collapse:collapse;font-size:.88rem;margin:.5rem 0}\
th,td{border:1px solid #d0d0d0;padding:.2rem .45rem;text-align:right}th[scope=row],td.l,th.l{text-align:left}\
thead th{background:#f2f2f2}caption{text-align:left;font-weight:600;padding:.3rem 0}\
figure.moescope-figure{margin:1.2rem 0;padding:.6rem;border:1px solid #e3e3e3;border-radius:6px;overflow-x:auto}\
figure svg.chart{display:block;max-width:100%;height:auto}\
figcaption{font-size:.9rem;color:#333;margin-top:.4rem}\
details.figure-data summary{cursor:pointer;font-size:.85rem;color:#0b5394}\
details.figure-data{max-height:30rem;overflow:auto}\
p.note{background:#fff8e1;border-left:4px solid #e69f00;padding:.5rem .8rem}\
.flags{display:flex;flex-wrap:wrap;gap:.4rem;margin:.6rem 0}\
.flag{padding:.25rem .6rem;border-radius:4px;font-weight:600;border:2px solid}\
.flag.collapsed{background:#fde0d0;border-color:#d55e00;color:#7a2e00}\
.flag.ok{background:#e3f4ee;border-color:#009e73;color:#00513b}\
.flag.undecided{background:#f2f2f2;border-color:#999;color:#333}\
.flag.reference{background:#fff;border-color:#000;color:#000}\
.verdict-collapsed{color:#a33c00;font-weight:700}.verdict-ok{color:#00694c}\
.status-repaired{color:#00694c;font-weight:700}.status-introduced,.status-worsened{color:#a33c00;font-weight:700}\
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;margin:.5rem 0}dl.meta dt{font-weight:600}dl.meta dd{margin:0}\
nav.links a{margin-right:1rem}\
";

/// Formats Unix milliseconds as `YYYY-MM-DD hh:mm:ss UTC` (proleptic Gregorian calendar).
pub(crate) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        // 1700000000 s is 2023-11-14 22:13:20 UTC.
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        // A leap day.
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn fixed_drops_the_sign_of_a_rounded_zero() {
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(fixed(-0.006, 2), "-0.01");
        assert_eq!(fixed(2.4949, 2), "2.49");
        assert_eq!(num(None, 2), "–");
    }

    #[test]
    fn tokens_groups_thousands() {
        assert_eq!(tokens(1234567.0), "1\u{2009}234\u{2009}567");
        assert_eq!(tokens(999.0), "999");
        assert_eq!(tokens(2.5), "2.5");
    }
}
