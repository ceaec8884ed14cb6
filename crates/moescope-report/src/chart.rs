//! The charts, drawn with plotters' SVG backend: line charts with layer bands, heatmaps with a
//! colour bar, grouped bar charts and small multiples. Every chart returns an SVG string ready to
//! be inlined in HTML (no `xmlns` URL, a `role="img"` and an accessible name).

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::ReportError;

/// The Okabe–Ito palette without black (black is the reference's colour): distinguishable with
/// the common colour-vision deficiencies.
pub(crate) const OKABE_ITO: [RGBColor; 7] = [
    RGBColor(230, 159, 0),   // orange
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(0, 114, 178),   // blue
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(240, 228, 66),  // yellow
];

/// The reference language's colour.
pub(crate) const REFERENCE_COLOR: RGBColor = RGBColor(0, 0, 0);

/// Font family of every text: a CSS generic family, so no font file is ever needed.
const FONT: &str = "sans-serif";

/// A text style of `size` pixels in `color`, anchored at `pos`.
fn anchored(size: impl Into<f64>, color: RGBColor, pos: Pos) -> TextStyle<'static> {
    TextStyle {
        font: (FONT, size.into()).into_font(),
        color: color.to_backend_color(),
        pos,
    }
}

/// How a series' line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dash {
    /// A solid line.
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dots.
    Dotted,
}

/// The look of a series: colour, dash and width.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Look {
    pub color: RGBColor,
    pub dash: Dash,
    pub width: u32,
}

impl Look {
    /// The look of the `i`-th non-reference series: the palette's colours, then the same with
    /// dashes, then dotted.
    pub(crate) fn nth(i: usize) -> Look {
        let dash = match (i / OKABE_ITO.len()) % 3 {
            0 => Dash::Solid,
            1 => Dash::Dashed,
            _ => Dash::Dotted,
        };
        Look {
            color: OKABE_ITO[i % OKABE_ITO.len()],
            dash,
            width: 2,
        }
    }

    /// The reference's look: black, solid, thicker.
    pub(crate) fn reference() -> Look {
        Look {
            color: REFERENCE_COLOR,
            dash: Dash::Solid,
            width: 3,
        }
    }
}

/// One line: a label and (x, y) points; `None` leaves a gap.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<(f64, Option<f64>)>,
    pub look: Look,
}

/// A shaded x range (the deep or middle layers).
#[derive(Debug, Clone)]
pub(crate) struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
    pub color: RGBColor,
}

/// A horizontal reference line with a label (log2 E, θ, zero).
#[derive(Debug, Clone)]
pub(crate) struct HLine {
    pub y: f64,
    pub label: String,
}

/// A line chart over the MoE layers (or any numeric x).
#[derive(Debug, Clone)]
pub(crate) struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub bands: Vec<Band>,
    pub hlines: Vec<HLine>,
    /// Lower and upper y bounds the axis must include (data may extend them).
    pub y_include: (f64, f64),
    /// x ticks are integers (layer numbers).
    pub integer_x: bool,
    /// Decimals of the y tick labels (0 for counts).
    pub y_decimals: usize,
}

/// A heatmap: `values[row][col]`, `None` drawn grey.
#[derive(Debug, Clone)]
pub(crate) struct Heatmap {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_names: Vec<String>,
    pub y_names: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
    /// Colour scale bounds.
    pub range: (f64, f64),
    /// The colour bar's label, with units.
    pub value_label: String,
    /// Height of one row in pixels (rows are thin for expert × layer maps).
    pub row_px: u32,
    /// Show every n-th y name (1: all).
    pub y_every: usize,
}

/// A grouped bar chart: one group per category, one bar per series.
#[derive(Debug, Clone)]
pub(crate) struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (label, colour, value per category).
    pub series: Vec<(String, RGBColor, Vec<Option<f64>>)>,
    pub hlines: Vec<HLine>,
    /// A note under each category (e.g. "repaired"), empty for none.
    pub notes: Vec<String>,
    /// A per-category level drawn across its group (label, values), e.g. each language's own
    /// threshold; empty values for none.
    pub marks: (String, Vec<Option<f64>>),
}

pub(crate) fn chart_err(figure: &'static str) -> impl Fn(String) -> ReportError {
    move |message| ReportError::Chart { figure, message }
}

/// Turns plotters' SVG into an inline SVG element: drops the namespace URL (the HTML parser puts
/// `<svg>` in the SVG namespace by itself), adds an accessible name and makes it scale.
fn finish_svg(svg: String, title: &str) -> String {
    let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    // SVG's defaults, written out on every rectangle: dropping them shrinks a heatmap by a third.
    let svg = svg
        .replace(" opacity=\"1\" fill=", " fill=")
        .replace("\" stroke=\"none\"/>", "\"/>");
    svg.replacen(
        "<svg ",
        &format!(
            "<svg role=\"img\" aria-label=\"{}\" class=\"chart\" ",
            crate::html::escape(title)
        ),
        1,
    )
}

fn pad_range(lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo < min_span {
        let mid = (lo + hi) / 2.0;
        (mid - min_span / 2.0, mid + min_span / 2.0)
    } else {
        (lo, hi)
    }
}

/// Legend entries drawn in their own area at the right of a chart.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Look)],
    top: i32,
) -> Result<(), String> {
    if entries.is_empty() {
        return Ok(());
    }
    let (_, h) = area.dim_in_pixel();
    let avail = (h as i32 - top - 10).max(16);
    let step = (avail / entries.len() as i32).clamp(8, 18);
    let font_px = (step - 3).clamp(8, 13);
    area.draw(&Text::new(
        "Legend",
        (6, top - 16),
        (FONT, 13).into_font().style(FontStyle::Bold),
    ))
    .map_err(|e| e.to_string())?;
    // Entries that do not fit are summed up in a last line (the value table lists them all).
    let fit = (avail / step).max(1) as usize;
    let shown = if entries.len() > fit {
        fit - 1
    } else {
        entries.len()
    };
    if shown < entries.len() {
        let y = top + shown as i32 * step + step / 2;
        area.draw(&Text::new(
            format!("… and {} more", entries.len() - shown),
            (6, y - font_px / 2),
            (FONT, font_px as f64 * 1.24).into_font(),
        ))
        .map_err(|e| e.to_string())?;
    }
    for (i, (label, look)) in entries.iter().take(shown).enumerate() {
        let y = top + i as i32 * step + step / 2;
        let style = ShapeStyle::from(&look.color).stroke_width(look.width);
        let segs: Vec<(i32, i32)> = match look.dash {
            Dash::Solid => vec![(6, 32)],
            Dash::Dashed => vec![(6, 15), (21, 32)],
            Dash::Dotted => vec![(6, 9), (13, 16), (20, 23), (27, 30)],
        };
        for (a, b) in segs {
            area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
                .map_err(|e| e.to_string())?;
        }
        area.draw(&Text::new(
            label.clone(),
            (38, y - font_px / 2),
            (FONT, font_px as f64 * 1.24).into_font(),
        ))
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Draws a line chart of `w` × `h` pixels.
pub(crate) fn line_chart(
    c: &LineChart,
    w: u32,
    h: u32,
    figure: &'static str,
) -> Result<String, ReportError> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        draw_line_chart(&root, c, true).map_err(chart_err(figure))?;
        root.present()
            .map_err(|e| chart_err(figure)(e.to_string()))?;
    }
    Ok(finish_svg(buf, &c.title))
}

/// Draws a line chart into `root` (a whole SVG or one panel of small multiples).
fn draw_line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &LineChart,
    legend: bool,
) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (w, _) = root.dim_in_pixel();
    let legend_w = if legend && !c.series.is_empty() {
        170.min(w / 3)
    } else {
        0
    };
    let (plot, legend_area) = root.split_horizontally(w - legend_w);

    let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (mut x0, mut x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (x_lo, x_hi) = (x0, x1);
    for b in &c.bands {
        x0 = x0.min(b.from);
        x1 = x1.max(b.to);
    }
    let (x0, x1) = if c.integer_x {
        // Half a layer beyond the first and last points (the bands already end there), so
        // the end markers sit inside the plot.
        let (a, b) = pad_range(x0, x1, 1.0);
        (a.min(x_lo - 0.5), b.max(x_hi + 0.5))
    } else {
        let (a, b) = pad_range(x0, x1, 1e-6);
        let m = (b - a) * 0.04;
        (a - m, b + m)
    };
    let ys = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|p| p.1))
        .chain(c.hlines.iter().map(|l| l.y));
    let (y0, y1) = ys.fold(c.y_include, |(a, b), y| (a.min(y), b.max(y)));
    let (y0, y1) = pad_range(y0, y1, 1.0);
    let margin = (y1 - y0) * 0.06;
    let (y0, y1) = (if y0 == 0.0 { 0.0 } else { y0 - margin }, y1 + margin);

    let small = root.dim_in_pixel().1 < 260;
    let mut chart = ChartBuilder::on(&plot)
        .caption(&c.title, (FONT, if small { 17 } else { 21 }))
        .margin(8)
        .x_label_area_size(if small { 38 } else { 44 })
        .y_label_area_size(if small { 44 } else { 58 })
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;

    // Bands first, under the grid and the lines.
    for b in &c.bands {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(b.from, y0), (b.to, y1)],
                b.color.mix(0.18).filled(),
            )))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                if small {
                    b.label.split(' ').next().unwrap_or_default().to_string()
                } else {
                    b.label.clone()
                },
                ((b.from + b.to) / 2.0, y1),
                anchored(14, RGBColor(60, 60, 60), Pos::new(HPos::Center, VPos::Top)),
            )))
            .map_err(e)?;
    }

    let integer_x = c.integer_x;
    let y_decimals = c.y_decimals;
    let x_fmt = move |x: &f64| {
        if integer_x {
            if (x - x.round()).abs() < 1e-9 {
                format!("{}", x.round() as i64)
            } else {
                String::new()
            }
        } else {
            format!("{x:.2}")
        }
    };
    let n_ticks = if integer_x {
        ((x1 - x0).round() as usize + 1).min(if small { 6 } else { 12 })
    } else {
        6
    };
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .x_labels(n_ticks)
        .y_labels(if small { 4 } else { 8 })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&|y| {
            if y_decimals == 0 && (y - y.round()).abs() > 1e-9 {
                String::new()
            } else {
                format!("{y:.y_decimals$}")
            }
        })
        .light_line_style(RGBColor(246, 246, 246))
        .bold_line_style(RGBColor(215, 215, 215))
        .label_style((FONT, if small { 13 } else { 15 }))
        .axis_desc_style((FONT, if small { 14 } else { 17 }))
        .draw()
        .map_err(e)?;

    for l in &c.hlines {
        let style = ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(1);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x0, l.y), (x1, l.y)],
                6,
                4,
                style,
            ))
            .map_err(e)?;
        chart
            .draw_series(std::iter::once(Text::new(
                l.label.clone(),
                (x0, l.y),
                anchored(14, RGBColor(60, 60, 60), Pos::new(HPos::Left, VPos::Bottom)),
            )))
            .map_err(e)?;
    }

    let markers = c.series.iter().map(|s| s.points.len()).max().unwrap_or(0) <= 16;
    for s in &c.series {
        let style = ShapeStyle::from(&s.look.color).stroke_width(s.look.width);
        // Contiguous runs of defined points; a missing value leaves a gap.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &(x, y) in &s.points {
            match y {
                Some(y) if y.is_finite() => runs.last_mut().expect("non-empty").push((x, y)),
                _ => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|r| !r.is_empty()) {
            match s.look.dash {
                Dash::Solid => chart
                    .draw_series(LineSeries::new(run.iter().copied(), style))
                    .map(|_| ()),
                Dash::Dashed => chart
                    .draw_series(DashedLineSeries::new(run.iter().copied(), 9, 5, style))
                    .map(|_| ()),
                Dash::Dotted => chart
                    .draw_series(DashedLineSeries::new(run.iter().copied(), 3, 4, style))
                    .map(|_| ()),
            }
            .map_err(e)?;
            if markers || run.len() == 1 {
                chart
                    .draw_series(
                        run.iter()
                            .map(|&p| Circle::new(p, 3, s.look.color.filled())),
                    )
                    .map_err(e)?;
            }
        }
    }
    if c.series
        .iter()
        .all(|s| s.points.iter().all(|p| p.1.is_none()))
    {
        chart
            .draw_series(std::iter::once(Text::new(
                "no data",
                ((x0 + x1) / 2.0, (y0 + y1) / 2.0),
                anchored(16, BLACK, Pos::new(HPos::Center, VPos::Center)),
            )))
            .map_err(e)?;
    }
    if legend_w > 0 {
        let entries: Vec<(String, Look)> =
            c.series.iter().map(|s| (s.label.clone(), s.look)).collect();
        draw_legend(&legend_area, &entries, 48)?;
    }
    Ok(())
}

/// Small multiples: one line chart per panel in a grid of `cols` columns, one shared legend
/// (`legend`) above the grid.
pub(crate) fn small_multiples(
    panels: &[LineChart],
    legend: &[(String, Look)],
    cols: usize,
    panel_w: u32,
    panel_h: u32,
    figure: &'static str,
    title: &str,
) -> Result<String, ReportError> {
    let cols = cols.max(1).min(panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let legend_h = 28u32;
    let (w, h) = (panel_w * cols as u32, legend_h + panel_h * rows as u32);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        let draw = || -> Result<(), String> {
            root.fill(&WHITE).map_err(|e| e.to_string())?;
            let (top, grid) = root.split_vertically(legend_h);
            let mut x = 8;
            for (label, look) in legend {
                let style = ShapeStyle::from(&look.color).stroke_width(look.width);
                let segs: Vec<(i32, i32)> = match look.dash {
                    Dash::Solid => vec![(x, x + 26)],
                    Dash::Dashed => vec![(x, x + 10), (x + 16, x + 26)],
                    Dash::Dotted => vec![(x, x + 3), (x + 8, x + 11), (x + 16, x + 19)],
                };
                for (a, b) in segs {
                    top.draw(&PathElement::new(vec![(a, 14), (b, 14)], style))
                        .map_err(|e| e.to_string())?;
                }
                top.draw(&Text::new(label.clone(), (x + 32, 7), (FONT, 17)))
                    .map_err(|e| e.to_string())?;
                x += 40 + 8 * label.chars().count() as i32 + 16;
            }
            let cells = grid.split_evenly((rows, cols));
            for (panel, cell) in panels.iter().zip(cells.iter()) {
                draw_line_chart(cell, panel, false)?;
            }
            Ok(())
        };
        draw().map_err(chart_err(figure))?;
        root.present()
            .map_err(|e| chart_err(figure)(e.to_string()))?;
    }
    Ok(finish_svg(buf, title))
}

/// The viridis colour of `v` on `range`.
pub(crate) fn viridis(v: f64, range: (f64, f64)) -> RGBColor {
    let (lo, hi) = range;
    let t = if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.5
    };
    ViridisRGB::get_color_normalized(t as f32, 0.0, 1.0)
}

/// Draws a heatmap with a colour bar at the right.
pub(crate) fn heatmap(c: &Heatmap, w: u32, figure: &'static str) -> Result<String, ReportError> {
    let rows = c.y_names.len();
    let cols = c.x_names.len();
    let plot_h = (rows as u32 * c.row_px).max(60);
    let h = plot_h + 110;
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        let draw = || -> Result<(), String> {
            let e2 = |e: DrawingAreaErrorKind<_>| format!("{e:?}");
            root.fill(&WHITE).map_err(e2)?;
            let bar_w = 110;
            let (plot, bar) = root.split_horizontally(w - bar_w);
            let y_area = 12
                + 8 * c
                    .y_names
                    .iter()
                    .map(|n| n.chars().count())
                    .max()
                    .unwrap_or(2) as u32;
            let mut chart = ChartBuilder::on(&plot)
                .caption(&c.title, (FONT, 21))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(y_area.clamp(40, 120) + 20)
                // Integer ranges are inclusive in plotters: 0..n−1 gives n segments.
                .build_cartesian_2d(
                    (0..cols.max(1) - 1).into_segmented(),
                    (0..rows.max(1) - 1).into_segmented(),
                )
                .map_err(e2)?;
            let x_names = &c.x_names;
            let y_names = &c.y_names;
            let y_every = c.y_every.max(1);
            let x_every = cols.div_ceil(16).max(1);
            let x_fmt = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(i) if i.is_multiple_of(x_every) || *i + 1 == cols => {
                    x_names.get(*i).cloned().unwrap_or_default()
                }
                _ => String::new(),
            };
            // Row 0 at the top: plotters' y grows upwards, so row r sits at rows − 1 − r.
            let y_fmt = |v: &SegmentValue<usize>| match v {
                SegmentValue::CenterOf(i) if *i < rows => {
                    let r = rows - 1 - *i;
                    if r.is_multiple_of(y_every) {
                        y_names.get(r).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_labels(cols.max(1) + 1)
                .y_labels(rows.max(1) + 1)
                .x_label_formatter(&x_fmt)
                .y_label_formatter(&y_fmt)
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .draw()
                .map_err(e2)?;
            let missing = RGBColor(215, 215, 215);
            chart
                .draw_series(c.values.iter().enumerate().flat_map(|(r, row)| {
                    row.iter().enumerate().map(move |(col, v)| {
                        let y = rows - 1 - r;
                        let color = match v {
                            Some(v) if v.is_finite() => viridis(*v, c.range),
                            _ => missing,
                        };
                        Rectangle::new(
                            [
                                (SegmentValue::Exact(col), SegmentValue::Exact(y)),
                                (SegmentValue::Exact(col + 1), SegmentValue::Exact(y + 1)),
                            ],
                            color.filled(),
                        )
                    })
                }))
                .map_err(e2)?;
            // The colour bar.
            let (_, bh) = bar.dim_in_pixel();
            let top = 50i32;
            let bottom = (bh as i32 - 50).max(top + 40);
            let steps = 24;
            for i in 0..steps {
                let t0 = i as f64 / steps as f64;
                let v = c.range.0 + (c.range.1 - c.range.0) * (1.0 - t0 - 0.5 / steps as f64);
                let ya = top + ((bottom - top) as f64 * t0) as i32;
                let yb = top + ((bottom - top) as f64 * (t0 + 1.0 / steps as f64)).ceil() as i32;
                bar.draw(&Rectangle::new(
                    [(10, ya), (28, yb)],
                    viridis(v, c.range).filled(),
                ))
                .map_err(e2)?;
            }
            for (frac, v) in [
                (0.0, c.range.1),
                (0.5, (c.range.0 + c.range.1) / 2.0),
                (1.0, c.range.0),
            ] {
                let y = top + ((bottom - top) as f64 * frac) as i32;
                bar.draw(&Text::new(
                    format_tick(v),
                    (32, y),
                    anchored(14, BLACK, Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(e2)?;
            }
            bar.draw(&Text::new(
                c.value_label.clone(),
                (6, top - 30),
                (FONT, 14).into_font(),
            ))
            .map_err(e2)?;
            bar.draw(&Rectangle::new(
                [(10, bottom + 12), (28, bottom + 24)],
                missing.filled(),
            ))
            .map_err(e2)?;
            bar.draw(&Text::new(
                "no data",
                (32, bottom + 18),
                anchored(14, BLACK, Pos::new(HPos::Left, VPos::Center)),
            ))
            .map_err(e2)?;
            Ok(())
        };
        draw().map_err(chart_err(figure))?;
        root.present()
            .map_err(|e| chart_err(figure)(e.to_string()))?;
    }
    Ok(finish_svg(buf, &c.title))
}

/// A tick label with as many decimals as its size asks for.
pub(crate) fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.1e}")
    }
}

/// Draws a grouped bar chart.
pub(crate) fn bar_chart(
    c: &BarChart,
    w: u32,
    h: u32,
    figure: &'static str,
) -> Result<String, ReportError> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        let draw = || -> Result<(), String> {
            let e2 = |e: DrawingAreaErrorKind<_>| format!("{e:?}");
            root.fill(&WHITE).map_err(e2)?;
            let legend_w = 170.min(w / 3);
            let (plot, legend_area) = root.split_horizontally(w - legend_w);
            let n = c.categories.len().max(1);
            let ys = c
                .series
                .iter()
                .flat_map(|s| s.2.iter().flatten().copied())
                .chain(c.marks.1.iter().flatten().copied())
                .chain(c.hlines.iter().map(|l| l.y));
            let (y0, y1) = ys.fold((0.0f64, 0.0f64), |(a, b), y| (a.min(y), b.max(y)));
            let (y0, y1) = pad_range(y0, y1, 0.5);
            let m = (y1 - y0) * 0.12;
            let (y0, y1) = (if y0 < 0.0 { y0 - m } else { y0 }, y1 + m);
            let mut chart = ChartBuilder::on(&plot)
                .caption(&c.title, (FONT, 21))
                .margin(8)
                .x_label_area_size(if c.notes.iter().any(|s| !s.is_empty()) {
                    56
                } else {
                    40
                })
                .y_label_area_size(58)
                .build_cartesian_2d(0f64..n as f64, y0..y1)
                .map_err(e2)?;
            let cats = &c.categories;
            let notes = &c.notes;
            let x_fmt = |x: &f64| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 1e-9 {
                    let name = cats.get(i).cloned().unwrap_or_default();
                    match notes.get(i) {
                        Some(note) if !note.is_empty() => format!("{name} ({note})"),
                        _ => name,
                    }
                } else {
                    String::new()
                }
            };
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .x_labels(0)
                .y_labels(8)
                .y_label_formatter(&|y| format!("{y:.2}"))
                .light_line_style(RGBColor(246, 246, 246))
                .bold_line_style(RGBColor(215, 215, 215))
                .label_style((FONT, 15))
                .axis_desc_style((FONT, 17))
                .draw()
                .map_err(e2)?;
            // Category names under the groups (centred on each group).
            let label_font = if n > 10 { 12 } else { 15 };
            for i in 0..n {
                let text = x_fmt(&(i as f64 + 0.5));
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (i as f64 + 0.5, y0),
                        anchored(label_font, BLACK, Pos::new(HPos::Center, VPos::Top)),
                    )))
                    .map_err(e2)?;
            }
            let k = c.series.len().max(1) as f64;
            let group = 0.8;
            let bw = group / k;
            for (si, (_, color, values)) in c.series.iter().enumerate() {
                chart
                    .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                        let v = (*v)?;
                        let xa = i as f64 + 0.1 + si as f64 * bw;
                        Some(Rectangle::new(
                            [(xa, 0.0), (xa + bw * 0.92, v)],
                            color.filled(),
                        ))
                    }))
                    .map_err(e2)?;
                // The value above (or below) each bar, so a bar near 0 still reads.
                chart
                    .draw_series(values.iter().enumerate().filter_map(|(i, v)| {
                        let v = (*v)?;
                        let xc = i as f64 + 0.1 + (si as f64 + 0.46) * bw;
                        let pos = if v >= 0.0 { VPos::Bottom } else { VPos::Top };
                        Some(Text::new(
                            crate::html::fixed(v, 2),
                            (xc, v),
                            anchored(13, RGBColor(40, 40, 40), Pos::new(HPos::Center, pos)),
                        ))
                    }))
                    .map_err(e2)?;
            }
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(0.0, 0.0), (n as f64, 0.0)],
                    ShapeStyle::from(&BLACK).stroke_width(1),
                )))
                .map_err(e2)?;
            for l in &c.hlines {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(0.0, l.y), (n as f64, l.y)],
                        6,
                        4,
                        ShapeStyle::from(&RGBColor(90, 90, 90)).stroke_width(2),
                    ))
                    .map_err(e2)?;
                // At the right end, clear of the first group's bars.
                chart
                    .draw_series(std::iter::once(Text::new(
                        l.label.clone(),
                        (n as f64, l.y),
                        anchored(14, BLACK, Pos::new(HPos::Right, VPos::Bottom)),
                    )))
                    .map_err(e2)?;
            }
            let mark_look = Look {
                color: RGBColor(0, 0, 0),
                dash: Dash::Solid,
                width: 3,
            };
            chart
                .draw_series(c.marks.1.iter().enumerate().filter_map(|(i, m)| {
                    let m = (*m)?;
                    Some(PathElement::new(
                        vec![(i as f64 + 0.05, m), (i as f64 + 0.95, m)],
                        ShapeStyle::from(&mark_look.color).stroke_width(mark_look.width),
                    ))
                }))
                .map_err(e2)?;
            let mut entries: Vec<(String, Look)> = c
                .series
                .iter()
                .map(|(label, color, _)| {
                    (
                        label.clone(),
                        Look {
                            color: *color,
                            dash: Dash::Solid,
                            width: 8,
                        },
                    )
                })
                .collect();
            if c.marks.1.iter().any(Option::is_some) {
                entries.push((c.marks.0.clone(), mark_look));
            }
            draw_legend(&legend_area, &entries, 48)?;
            Ok(())
        };
        draw().map_err(chart_err(figure))?;
        root.present()
            .map_err(|e| chart_err(figure)(e.to_string()))?;
    }
    Ok(finish_svg(buf, &c.title))
}
