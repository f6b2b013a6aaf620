//! Drawing: horizontal bar figures (one panel per case, labels written
//! beside the bars so no legend is needed), latency CDFs, and their PNG
//! copies.
//!
//! Bars are drawn with plotters' primitives on its SVG backend, in pixel
//! coordinates computed here: the scale leaves room for the longest value
//! label, so nothing is cut off or overlaps. The PNG is the SVG rendered by
//! resvg with the system's sans-serif font.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::combinators::BindKeyPoints;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::goals::Verdict;

/// Canvas width of every figure.
pub const WIDTH: u32 = 1200;
/// Narrowest and widest left column (the bar labels; sized to the longest).
const LEFT_RANGE: (i32, i32) = (200, 560);
/// Space right of the widest value label.
const RIGHT_MARGIN: i32 = 30;
/// Height of the figure's title and subtitle.
const TITLE_H: i32 = 78;
/// Height of a panel's title.
const PANEL_TITLE_H: i32 = 30;
/// Height of one bar's row.
const ROW: i32 = 28;
/// Thickness of a bar.
const BAR: i32 = 18;
/// Height of the axis with its tick labels.
const AXIS_H: i32 = 28;
/// Height of a goal line under a panel.
const LINE_H: i32 = 21;
/// Space after a panel.
const PANEL_GAP: i32 = 22;
/// Height of a footnote line.
const NOTE_H: i32 = 19;

/// Font sizes (plotters' units; the SVG says `font-size` = size / 1.24).
const TITLE_FONT: f64 = 27.0;
const PANEL_FONT: f64 = 21.0;
const TEXT_FONT: f64 = 17.0;
const SMALL_FONT: f64 = 16.0;

/// The text colour of footnotes and context lines.
const GREY: RGBColor = RGBColor(90, 90, 90);
/// Background of gladius's rows.
const HIGHLIGHT: RGBColor = RGBColor(255, 240, 210);

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    /// Label left of the bar.
    pub label: String,
    /// Its figure.
    pub value: f64,
    /// Fill colour.
    pub color: RGBColor,
    /// gladius: bold label and value, highlighted row.
    pub gladius: bool,
    /// Text after the value (ratios), may be empty.
    pub note: String,
}

/// One goal or context line under a panel.
#[derive(Debug, Clone)]
pub struct Line {
    /// Met / missed / context.
    pub verdict: Verdict,
    /// The line's text.
    pub text: String,
}

/// One panel: a titled group of bars on the figure's common scale.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title above the bars.
    pub title: String,
    /// The bars, top to bottom.
    pub bars: Vec<Bar>,
    /// Goal lines under the axis.
    pub lines: Vec<Line>,
}

/// A figure answering one question.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Title (the question).
    pub title: String,
    /// What the bars measure and which way is better.
    pub subtitle: String,
    /// Logarithmic scale (for figures spanning decades).
    pub log: bool,
    /// The value label of a bar.
    pub value_text: fn(f64) -> String,
    /// A tick label of the axis.
    pub tick_text: fn(f64) -> String,
    /// The panels, top to bottom; all share one scale.
    pub panels: Vec<Panel>,
    /// Footnotes.
    pub notes: Vec<String>,
}

/// Approximate width in pixels of `s` in the sans-serif font at plotters
/// size `size` (DejaVu Sans averages under 0.6 em per character; bold 0.66).
fn text_width(s: &str, size: f64, bold: bool) -> f64 {
    let em = size / 1.24;
    s.chars().count() as f64 * em * if bold { 0.66 } else { 0.6 }
}

/// A plotters text style.
fn font(size: f64, bold: bool, color: RGBColor, h: HPos) -> TextStyle<'static> {
    let style = if bold {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    FontDesc::new(FontFamily::SansSerif, size, style)
        .color(&color)
        .pos(Pos::new(h, VPos::Center))
}

/// Splits `text` into lines at most `max` pixels wide (at font `size`),
/// at spaces; a single longer word stays whole.
fn wrap(text: &str, max: f64, size: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && text_width(&candidate, size, false) > max {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The value axis of a figure.
#[derive(Debug, Clone)]
struct Scale {
    log: bool,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    /// Pixel x of `lo` (the bars' left edge).
    left: i32,
}

impl Scale {
    /// The bars' pixel width.
    fn width(left: i32) -> f64 {
        (WIDTH as i32 - left - RIGHT_MARGIN) as f64
    }

    fn f(&self, v: f64) -> f64 {
        if self.log {
            v.max(self.lo).log10()
        } else {
            v
        }
    }

    /// The x pixel of a value.
    fn px(&self, v: f64) -> i32 {
        let t = (self.f(v) - self.f(self.lo)) / (self.f(self.hi) - self.f(self.lo));
        self.left + (t.clamp(0.0, 1.0) * Self::width(self.left)).round() as i32
    }

    /// A scale on which every bar's end plus its labels (`room` pixels)
    /// fits left of the right margin.
    fn fit(log: bool, bars: &[(f64, f64)], left: i32) -> Option<Scale> {
        let max = bars.iter().map(|b| b.0).fold(f64::NAN, f64::max);
        let min = bars.iter().map(|b| b.0).fold(f64::NAN, f64::min);
        if !(max > 0.0 && min > 0.0) {
            return None;
        }
        let w = Self::width(left);
        // The value must sit at most (w - room) / w of the way along.
        let share = |room: f64| ((w - room) / w).max(0.2);
        if log {
            let lo = 10f64.powf((min * 0.5).log10().floor());
            let need = bars
                .iter()
                .map(|&(v, room)| lo.log10() + (v.log10() - lo.log10()) / share(room))
                .fold(f64::NEG_INFINITY, f64::max);
            let hi = 10f64.powf(need.ceil());
            let mut ticks = Vec::new();
            let mut d = lo;
            while d <= hi * 1.0001 {
                ticks.push(d);
                d *= 10.0;
            }
            // A ramp of 1-2-5 when there are few decades to label.
            if ticks.len() <= 3 {
                ticks = ticks
                    .iter()
                    .flat_map(|&d| [d, 2.0 * d, 5.0 * d])
                    .filter(|&t| t <= hi * 1.0001)
                    .collect();
            }
            Some(Scale {
                log,
                lo,
                hi,
                ticks,
                left,
            })
        } else {
            let need = bars
                .iter()
                .map(|&(v, room)| v / share(room))
                .fold(0.0, f64::max);
            let raw = need / 6.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                .into_iter()
                .map(|m| m * mag)
                .find(|s| *s >= raw)
                .unwrap_or(10.0 * mag);
            let hi = (need / step).ceil() * step;
            let ticks = (0..)
                .map(|i| i as f64 * step)
                .take_while(|t| *t <= hi * 1.0001)
                .collect();
            Some(Scale {
                log,
                lo: 0.0,
                hi,
                ticks,
                left,
            })
        }
    }
}

/// The pixel room a bar needs right of its end for its labels.
fn label_room(fig: &Figure, bar: &Bar) -> f64 {
    let mut room = 8.0 + text_width(&(fig.value_text)(bar.value), TEXT_FONT, bar.gladius);
    if !bar.note.is_empty() {
        room += 12.0 + text_width(&bar.note, SMALL_FONT, false);
    }
    room + 4.0
}

/// The left column's width: the longest bar label's, within [`LEFT_RANGE`].
fn left_edge(fig: &Figure) -> i32 {
    let widest = fig
        .panels
        .iter()
        .flat_map(|p| p.bars.iter())
        .map(|b| text_width(&b.label, TEXT_FONT, b.gladius))
        .fold(text_width("NO DATA", TEXT_FONT, true), f64::max);
    (widest.ceil() as i32 + 30).clamp(LEFT_RANGE.0, LEFT_RANGE.1)
}

/// Draws a bar figure into an SVG document. None if it has no bars.
pub fn bar_figure_svg(fig: &Figure) -> Result<Option<String>> {
    let left = left_edge(fig);
    let bars: Vec<(f64, f64)> = fig
        .panels
        .iter()
        .flat_map(|p| p.bars.iter())
        .map(|b| (b.value, label_room(fig, b)))
        .collect();
    let Some(scale) = Scale::fit(fig.log, &bars, left) else {
        return Ok(None);
    };
    // Goal lines and footnotes, wrapped to the canvas.
    let line_width = (WIDTH as i32 - left - 20) as f64;
    let lines: Vec<Vec<(Verdict, Vec<String>)>> = fig
        .panels
        .iter()
        .map(|p| {
            p.lines
                .iter()
                .map(|l| (l.verdict, wrap(&l.text, line_width, TEXT_FONT)))
                .collect()
        })
        .collect();
    let notes: Vec<String> = fig
        .notes
        .iter()
        .flat_map(|n| wrap(n, (WIDTH - 40) as f64, SMALL_FONT))
        .collect();
    let subtitle = wrap(&fig.subtitle, (WIDTH - 40) as f64, TEXT_FONT);
    let panels_h: i32 = fig
        .panels
        .iter()
        .zip(&lines)
        .map(|(p, l)| {
            let wrapped: usize = l.iter().map(|(_, t)| t.len()).sum();
            PANEL_TITLE_H + ROW * p.bars.len() as i32 + AXIS_H + LINE_H * wrapped as i32 + PANEL_GAP
        })
        .sum();
    let title_h = TITLE_H + LINE_H * (subtitle.len() as i32 - 1).max(0);
    let height = (title_h + panels_h + NOTE_H * notes.len() as i32 + 12) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        let e = |e| anyhow!("drawing {}: {e:?}", fig.title);
        root.fill(&WHITE).map_err(e)?;
        root.draw(&Text::new(
            fig.title.clone(),
            (20, 22),
            font(TITLE_FONT, true, BLACK, HPos::Left),
        ))
        .map_err(e)?;
        for (i, line) in subtitle.iter().enumerate() {
            root.draw(&Text::new(
                line.clone(),
                (20, 52 + LINE_H * i as i32),
                font(TEXT_FONT, false, GREY, HPos::Left),
            ))
            .map_err(e)?;
        }
        let mut y = title_h;
        for (panel, lines) in fig.panels.iter().zip(&lines) {
            root.draw(&Text::new(
                panel.title.clone(),
                (20, y + PANEL_TITLE_H / 2),
                font(PANEL_FONT, true, BLACK, HPos::Left),
            ))
            .map_err(e)?;
            y += PANEL_TITLE_H;
            let bottom = y + ROW * panel.bars.len() as i32;
            for (i, bar) in panel.bars.iter().enumerate() {
                if bar.gladius {
                    let top = y + ROW * i as i32;
                    root.draw(&Rectangle::new(
                        [(12, top + 1), (WIDTH as i32 - 12, top + ROW - 1)],
                        HIGHLIGHT.filled(),
                    ))
                    .map_err(e)?;
                }
            }
            for &t in &scale.ticks {
                let x = scale.px(t);
                root.draw(&PathElement::new(
                    vec![(x, y), (x, bottom)],
                    RGBColor(225, 225, 225).stroke_width(1),
                ))
                .map_err(e)?;
                root.draw(&Text::new(
                    (fig.tick_text)(t),
                    (x, bottom + AXIS_H / 2),
                    font(SMALL_FONT, false, GREY, HPos::Center),
                ))
                .map_err(e)?;
            }
            for (i, bar) in panel.bars.iter().enumerate() {
                let cy = y + ROW * i as i32 + ROW / 2;
                root.draw(&Text::new(
                    bar.label.clone(),
                    (left - 10, cy),
                    font(TEXT_FONT, bar.gladius, BLACK, HPos::Right),
                ))
                .map_err(e)?;
                let end = scale.px(bar.value).max(left + 1);
                root.draw(&Rectangle::new(
                    [(left, cy - BAR / 2), (end, cy + BAR / 2)],
                    bar.color.filled(),
                ))
                .map_err(e)?;
                let value = (fig.value_text)(bar.value);
                root.draw(&Text::new(
                    value.clone(),
                    (end + 8, cy),
                    font(TEXT_FONT, bar.gladius, BLACK, HPos::Left),
                ))
                .map_err(e)?;
                if !bar.note.is_empty() {
                    let x = end + 8 + text_width(&value, TEXT_FONT, bar.gladius).ceil() as i32 + 12;
                    root.draw(&Text::new(
                        bar.note.clone(),
                        (x, cy),
                        font(SMALL_FONT, false, RGBColor(150, 60, 0), HPos::Left),
                    ))
                    .map_err(e)?;
                }
            }
            root.draw(&PathElement::new(
                vec![(left, y), (left, bottom)],
                BLACK.stroke_width(1),
            ))
            .map_err(e)?;
            root.draw(&PathElement::new(
                vec![(left, bottom), (WIDTH as i32 - RIGHT_MARGIN, bottom)],
                BLACK.stroke_width(1),
            ))
            .map_err(e)?;
            y = bottom + AXIS_H;
            for (verdict, texts) in lines {
                let (word, color) = match verdict {
                    Verdict::Met => ("MET", RGBColor(0, 120, 40)),
                    Verdict::Missed => ("MISSED", RGBColor(190, 20, 20)),
                    Verdict::NoData => ("NO DATA", GREY),
                    Verdict::Info => ("context", GREY),
                };
                root.draw(&Text::new(
                    word,
                    (left - 10, y + LINE_H / 2),
                    font(TEXT_FONT, true, color, HPos::Right),
                ))
                .map_err(e)?;
                for text in texts {
                    root.draw(&Text::new(
                        text.clone(),
                        (left, y + LINE_H / 2),
                        font(TEXT_FONT, false, color, HPos::Left),
                    ))
                    .map_err(e)?;
                    y += LINE_H;
                }
            }
            y += PANEL_GAP;
        }
        for note in &notes {
            root.draw(&Text::new(
                note.clone(),
                (20, y + NOTE_H / 2),
                font(SMALL_FONT, false, GREY, HPos::Left),
            ))
            .map_err(e)?;
            y += NOTE_H;
        }
        root.present().map_err(e)?;
    }
    Ok(Some(svg))
}

/// One CDF line: name, colour, (latency µs, percentile) points.
pub type Curve = (String, RGBColor, Vec<(f64, f64)>);

/// Width of the CDF's legend column.
const LEGEND_WIDTH: u32 = 380;

/// A latency distribution (CDF) plot, log-scale latency. None without data.
pub fn cdf_svg(title: &str, curves: &[Curve]) -> Result<Option<String>> {
    let xs = curves.iter().flat_map(|c| c.2.iter().map(|p| p.0));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if !(x0.is_finite() && x1.is_finite() && x0 > 0.0) {
        return Ok(None);
    }
    let size = (WIDTH, 600);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let e = |e| anyhow!("drawing {title}: {e:?}");
        root.fill(&WHITE).map_err(e)?;
        let (plot, legend) = root.split_horizontally(size.0 - LEGEND_WIDTH);
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                title,
                ("sans-serif", PANEL_FONT)
                    .into_font()
                    .style(FontStyle::Bold),
            )
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (x0 / 1.3..x1 * 1.3)
                    .log_scale()
                    .with_key_points(one_two_five(x0 / 1.3, x1 * 1.3)),
                0.0..100.0,
            )
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("round-trip time (µs, log scale)")
            .y_desc("percentile")
            .label_style(("sans-serif", SMALL_FONT))
            .axis_desc_style(("sans-serif", TEXT_FONT))
            .light_line_style(RGBColor(242, 242, 242))
            .x_label_formatter(&|x| format!("{x}"))
            .y_label_formatter(&|y| format!("{y:.0}%"))
            .draw()
            .map_err(e)?;
        for (name, color, points) in curves {
            let width = if name.starts_with("gladius") { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(width),
                ))
                .map_err(e)?;
        }
        for (i, (name, color, _)) in curves.iter().enumerate() {
            let y = 70 + 26 * i as i32;
            let gladius = name.starts_with("gladius");
            legend
                .draw(&PathElement::new(
                    vec![(5, y), (40, y)],
                    color.stroke_width(if gladius { 4 } else { 3 }),
                ))
                .map_err(e)?;
            legend
                .draw(&Text::new(
                    name.clone(),
                    (48, y),
                    font(TEXT_FONT, gladius, BLACK, HPos::Left),
                ))
                .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(Some(svg))
}

/// Axis ticks 1, 2, 5, 10, 20, 50, ... between `lo` and `hi`.
pub fn one_two_five(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.max(1e-3).log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Scale of the PNG copies (1.5: crisp on high-density screens, still small).
const PNG_SCALE: f32 = 1.5;

/// Renders an SVG document to a PNG file with the system's fonts.
pub fn write_png(svg: &str, path: &Path) -> Result<()> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // plotters asks for "sans-serif"; map it to a face that is installed.
    let family = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Arial"]
        .into_iter()
        .find(|f| {
            db.faces()
                .any(|face| face.families.iter().any(|(name, _)| name == f))
        })
        .map(str::to_string)
        .or_else(|| {
            db.faces()
                .next()
                .and_then(|f| f.families.first())
                .map(|f| f.0.clone())
        });
    match family {
        Some(f) => db.set_sans_serif_family(f),
        None => eprintln!(
            "no system fonts found: {} will have no text (install e.g. fonts-dejavu-core)",
            path.display()
        ),
    }
    let tree = usvg::Tree::from_str(svg, &opt).context("parsing our own SVG")?;
    let size = tree.size();
    let (w, h) = (
        (size.width() * PNG_SCALE).ceil() as u32,
        (size.height() * PNG_SCALE).ceil() as u32,
    );
    let mut pixmap = tiny_skia::Pixmap::new(w, h).context("PNG size")?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(PNG_SCALE, PNG_SCALE),
        &mut pixmap.as_mut(),
    );
    pixmap
        .save_png(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `name`.svg and `name`.png into `dir`.
pub fn write_both(dir: &Path, name: &str, svg: &str) -> Result<()> {
    let svg_path = dir.join(format!("{name}.svg"));
    std::fs::write(&svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;
    let png_path = dir.join(format!("{name}.png"));
    write_png(svg, &png_path)?;
    eprintln!("wrote {} and {}", svg_path.display(), png_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every bar's end plus its labels stays inside the canvas, on linear
    /// and log scales, whichever bar is the longest.
    #[test]
    fn labels_fit_right_of_every_bar() {
        for log in [false, true] {
            for bars in [
                vec![(1099.0, 90.0), (377.0, 420.0), (12.0, 60.0)],
                vec![(12_926_965.0, 70.0), (679_412.0, 400.0), (146_729.0, 70.0)],
                vec![(5000.0, 500.0), (10.0, 60.0)],
            ] {
                let scale = Scale::fit(log, &bars, 300).unwrap();
                for (v, room) in bars {
                    let end = scale.px(v) as f64 + room;
                    assert!(
                        end <= (WIDTH as i32 - RIGHT_MARGIN) as f64 + 1.0,
                        "log {log}: bar {v} ends at {end}"
                    );
                }
                assert!(scale.ticks.len() >= 2, "{:?}", scale.ticks);
            }
        }
    }

    #[test]
    fn long_text_wraps_at_spaces_within_the_width() {
        let text = "one two three four five six seven eight nine ten eleven twelve";
        let lines = wrap(text, 150.0, SMALL_FONT);
        assert!(lines.len() > 1);
        assert_eq!(lines.join(" "), text);
        for line in &lines {
            assert!(text_width(line, SMALL_FONT, false) <= 150.0, "{line}");
        }
        assert_eq!(wrap("short", 150.0, SMALL_FONT), ["short"]);
    }
}
