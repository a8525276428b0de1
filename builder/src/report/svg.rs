//! Grouped bar charts as inline SVG, written by hand: one group per category, one bar per
//! engine, a whisker from the smallest to the largest repetition, a value axis from zero with
//! round ticks, an optional reference line (the host at 100 %).

use std::fmt::Write as _;

use super::text::short;

/// Bar colours, one per engine in order (colour-blind friendly, Okabe–Ito).
pub const COLOURS: [&str; 8] = [
    "#000000", "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442",
];

/// One bar: median with its whisker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bar {
    /// Height.
    pub value: f64,
    /// Whisker bottom.
    pub low: f64,
    /// Whisker top.
    pub high: f64,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the value axis.
    pub y_label: &'a str,
    /// Series names (engines), in colour order.
    pub series: &'a [String],
    /// Category labels.
    pub categories: &'a [String],
    /// `bars[category][series]`.
    pub bars: &'a [Vec<Option<Bar>>],
    /// A horizontal reference line and its label.
    pub reference: Option<(f64, &'a str)>,
}

/// Escapes text for XML.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A tick value: whole numbers without decimals.
fn tick_label(v: f64) -> String {
    if v == v.round() && v.abs() < 1e4 {
        format!("{v:.0}")
    } else {
        short(v)
    }
}

/// A round step for about `n` ticks up to `max`.
pub fn tick_step(max: f64, n: f64) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 2.5 {
        2.5
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

const LEFT: f64 = 70.0;
const TOP: f64 = 34.0;
const PLOT_H: f64 = 240.0;
const BAR_W: f64 = 12.0;
const GROUP_GAP: f64 = 22.0;
const LEGEND_H: f64 = 22.0;
const MIN_PLOT_W: f64 = 480.0;
/// Width of a character of the 11 px labels, roughly.
const CHAR_W: f64 = 6.2;

/// Renders `chart` as an `<svg>` element.
pub fn render(chart: &Chart<'_>) -> String {
    let n_series = chart.series.len().max(1);
    let n_categories = chart.categories.len().max(1);
    // Groups share at least MIN_PLOT_W; each is at least wide enough for its bars.
    let plot_w = (n_categories as f64 * (n_series as f64 * BAR_W + GROUP_GAP)).max(MIN_PLOT_W);
    let group_w = plot_w / n_categories as f64;
    let longest = chart
        .categories
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(0) as f64;
    // Labels wider than their group are drawn at 40 degrees below the axis.
    let rotate = longest * CHAR_W > group_w - 4.0;
    let label_h = if rotate {
        (longest * CHAR_W * 0.65).clamp(18.0, 160.0)
    } else {
        18.0
    };
    let width = LEFT + plot_w + 20.0;
    let height = TOP + PLOT_H + label_h + 24.0 + LEGEND_H;
    let mut max = chart
        .bars
        .iter()
        .flatten()
        .flatten()
        .map(|b| b.high.max(b.value))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    if let Some((r, _)) = chart.reference {
        max = max.max(r);
    }
    let step = tick_step(max, 5.0);
    let top = (max / step).ceil().max(1.0) * step;
    let y = |v: f64| TOP + PLOT_H - (v.max(0.0) / top).min(1.05) * PLOT_H;

    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\" font-family=\"sans-serif\" font-size=\"11\" \
         role=\"img\"><title>{}</title>",
        esc(chart.title)
    );
    let _ = write!(
        s,
        "<text x=\"{LEFT}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>",
        esc(chart.title)
    );
    // Axis and grid.
    let mut t = 0.0;
    while t <= top + step / 2.0 {
        let yy = y(t);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - 10.0,
            LEFT - 6.0,
            yy + 4.0,
            esc(&tick_label(t))
        );
        t += step;
    }
    let _ = write!(
        s,
        "<text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        TOP + PLOT_H / 2.0,
        esc(chart.y_label)
    );
    let _ = write!(
        s,
        "<line x1=\"{LEFT}\" x2=\"{LEFT}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#333\"/>\
         <line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
        TOP + PLOT_H,
        width - 10.0,
        TOP + PLOT_H,
        TOP + PLOT_H
    );
    for (ci, category) in chart.categories.iter().enumerate() {
        let gx = LEFT + ci as f64 * group_w + (group_w - n_series as f64 * BAR_W) / 2.0;
        for (si, bar) in chart.bars.get(ci).into_iter().flatten().enumerate() {
            let Some(bar) = bar else { continue };
            if !bar.value.is_finite() {
                continue;
            }
            let x = gx + si as f64 * BAR_W;
            let colour = COLOURS[si % COLOURS.len()];
            let yv = y(bar.value);
            let name = chart.series.get(si).map(String::as_str).unwrap_or("");
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{yv:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\">\
                 <title>{}: {} (min {}, max {})</title></rect>",
                BAR_W - 2.0,
                (TOP + PLOT_H - yv).max(0.0),
                esc(&format!("{name} {category}")),
                esc(&short(bar.value)),
                esc(&short(bar.low)),
                esc(&short(bar.high))
            );
            if bar.high > bar.low && bar.low.is_finite() && bar.high.is_finite() {
                let cx = x + (BAR_W - 2.0) / 2.0;
                let (y1, y2) = (y(bar.low), y(bar.high));
                let _ = write!(
                    s,
                    "<path d=\"M{cx:.1} {y1:.1}V{y2:.1}M{:.1} {y1:.1}h6M{:.1} {y2:.1}h6\" \
                     stroke=\"#555\" stroke-width=\"1.2\" fill=\"none\"/>",
                    cx - 3.0,
                    cx - 3.0
                );
            }
        }
        let lx = gx + (n_series as f64 * BAR_W) / 2.0;
        let ly = TOP + PLOT_H + 14.0;
        if rotate {
            let _ = write!(
                s,
                "<text transform=\"translate({lx:.1} {ly:.1}) rotate(40)\">{}</text>",
                esc(category)
            );
        } else {
            let _ = write!(
                s,
                "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"middle\">{}</text>",
                esc(category)
            );
        }
    }
    if let Some((value, label)) = chart.reference {
        let yy = y(value);
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#c00\" \
             stroke-dasharray=\"5 3\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
             fill=\"#c00\">{}</text>",
            width - 10.0,
            width - 12.0,
            yy - 4.0,
            esc(label)
        );
    }
    let ly = height - 8.0;
    let mut lx = LEFT;
    for (si, name) in chart.series.iter().enumerate() {
        let _ = write!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            ly - 9.0,
            COLOURS[si % COLOURS.len()],
            lx + 14.0,
            esc(name)
        );
        lx += 24.0 + name.chars().count() as f64 * 6.5;
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(100.0, 5.0), 20.0);
        assert_eq!(tick_step(1.2e9, 5.0), 2.5e8);
        assert_eq!(tick_step(0.0, 5.0), 1.0);
        assert_eq!(tick_step(7.0, 5.0), 2.0);
    }

    #[test]
    fn chart_is_well_formed_and_escaped() {
        let series = vec!["host".to_string(), "q<emu>".to_string()];
        let categories = vec!["a&b".to_string(), "c".to_string()];
        let bars = vec![
            vec![
                Some(Bar {
                    value: 10.0,
                    low: 9.0,
                    high: 11.0,
                }),
                None,
            ],
            vec![
                Some(Bar {
                    value: 5.0,
                    low: 5.0,
                    high: 5.0,
                }),
                Some(Bar {
                    value: f64::NAN,
                    low: 0.0,
                    high: 0.0,
                }),
            ],
        ];
        let svg = render(&Chart {
            title: "T",
            y_label: "bytes/s",
            series: &series,
            categories: &categories,
            bars: &bars,
            reference: Some((100.0, "host")),
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a&amp;b") && svg.contains("q&lt;emu&gt;"));
        assert_eq!(
            svg.matches("<rect").count(),
            2 + 2,
            "two bars and two legend keys"
        );
        assert_eq!(
            svg.matches("<path").count(),
            1,
            "one whisker (the other bar has none)"
        );
        assert!(!svg.contains("NaN"));
    }
}
