//! SVG line charts (plotters) for loss curves and the run report: lines and markers, 95% interval
//! bars and a label (a count, say) beside each point, and whole-number ticks on an axis of rounds.
//!
//! ```
//! use lmsi::plot::{Axes, Series, line_chart};
//!
//! let accuracy = Series::line_and_markers("greedy", vec![(0.0, 63.5), (1.0, 85.0)])
//!     .with_intervals(vec![[56.6, 69.9], [79.4, 89.3]])
//!     .with_labels(vec!["n=200".into(), "n=200".into()]);
//! let axes = Axes::new("accuracy", "round", "accuracy (%)").whole_x();
//! let svg = line_chart(&axes, &[accuracy]);
//! assert!(svg.starts_with("<svg") && svg.contains("n=200"));
//! ```

use plotters::prelude::*;

/// How a series' points are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Line,
    Markers,
    LineAndMarkers,
}

/// One named series of points, with optional interval bars and labels (one per point each).
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub style: Style,
    /// A vertical bar from `low` to `high` at each point (a 95% interval); empty: none.
    pub intervals: Vec<[f64; 2]>,
    /// A text beside each point; empty: none.
    pub labels: Vec<String>,
}

impl<'a> Series<'a> {
    pub fn line(name: &'a str, points: Vec<(f64, f64)>) -> Self {
        Self::styled(name, points, Style::Line)
    }

    pub fn markers(name: &'a str, points: Vec<(f64, f64)>) -> Self {
        Self::styled(name, points, Style::Markers)
    }

    pub fn line_and_markers(name: &'a str, points: Vec<(f64, f64)>) -> Self {
        Self::styled(name, points, Style::LineAndMarkers)
    }

    fn styled(name: &'a str, points: Vec<(f64, f64)>, style: Style) -> Self {
        Series {
            name,
            points,
            style,
            intervals: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Bars from `low` to `high`, one per point, in the points' order.
    pub fn with_intervals(mut self, intervals: Vec<[f64; 2]>) -> Self {
        self.intervals = intervals;
        self
    }

    /// Texts beside the points, one per point, in the points' order.
    pub fn with_labels(mut self, labels: Vec<String>) -> Self {
        self.labels = labels;
        self
    }
}

/// A chart's title, axis names, and whether its x axis counts whole things (rounds), so that its
/// ticks fall on whole numbers only.
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub whole_x: bool,
}

impl<'a> Axes<'a> {
    pub fn new(title: &'a str, x_label: &'a str, y_label: &'a str) -> Self {
        Axes {
            title,
            x_label,
            y_label,
            whole_x: false,
        }
    }

    /// Ticks on the x axis at whole numbers only.
    pub fn whole_x(mut self) -> Self {
        self.whole_x = true;
        self
    }
}

/// An SVG line chart of `series`, 720x420, axes fitted to the data and its intervals.
pub fn line_chart(axes: &Axes<'_>, series: &[Series<'_>]) -> String {
    let ranges = fitted_ranges(series);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        draw(&root, axes, series, ranges).expect("drawing into a string cannot fail");
        root.present().expect("drawing into a string cannot fail");
    }
    svg
}

/// The data's x and y ranges (intervals included), padded by 5% on each side and, above, by room
/// for the legend.
fn fitted_ranges(series: &[Series<'_>]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let mut xy: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.clone()).collect();
    for s in series {
        for (&(x, _), &[low, high]) in s.points.iter().zip(&s.intervals) {
            xy.extend([(x, low), (x, high)]);
        }
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in xy
        .into_iter()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
    {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let span = |lo: f64, hi: f64| (hi - lo).abs().max(1e-9);
    let (sx, sy) = (span(x0, x1), span(y0, y1));
    // The legend sits in a band above the data, so it never hides a point: about 7% of the
    // plot's height per entry plus its border.
    let legend = (0.07 * series.len() as f64 + 0.04).min(0.5);
    let headroom = 1.1 * legend / (1.0 - legend);
    (
        x0 - 0.05 * sx..x1 + 0.05 * sx,
        y0 - 0.05 * sy..y1 + (0.05 + headroom) * sy,
    )
}

type Ranges = (std::ops::Range<f64>, std::ops::Range<f64>);

/// At most this many labelled ticks on the x axis.
const X_TICKS: usize = 10;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    axes: &Axes<'_>,
    series: &[Series<'_>],
    (xs, ys): Ranges,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(axes.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xs.clone(), ys)?;
    // Asking for no more ticks than there are whole numbers in the range makes plotters' steps
    // (1, 2 or 5 times a power of ten) whole.
    let whole = (xs.end.floor() - xs.start.ceil()) as usize + 1;
    let whole_x_label = |x: &f64| format!("{x:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(axes.x_label).y_desc(axes.y_label);
    if axes.whole_x {
        mesh.x_labels(whole.clamp(1, X_TICKS))
            .x_label_formatter(&whole_x_label);
    }
    mesh.draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        if s.style != Style::Markers {
            chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?;
        }
        if s.style != Style::Line {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
        }
        chart.draw_series(
            s.points
                .iter()
                .zip(&s.intervals)
                .map(|(&(x, y), &[low, high])| {
                    ErrorBar::new_vertical(x, low, y, high, color.stroke_width(1), 10)
                }),
        )?;
        chart.draw_series(s.points.iter().zip(&s.labels).map(|(&p, label)| {
            EmptyElement::at(p) + Text::new(label.clone(), (7, -16), ("sans-serif", 12))
        }))?;
        // An invisible element carries the legend entry, drawn as the series is.
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(s.name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_the_series() {
        let svg = line_chart(
            &Axes::new("loss", "step", "loss"),
            &[
                Series::line("train", vec![(1.0, 2.0), (2.0, 1.5), (3.0, 1.2)]),
                Series::markers("held-out", vec![(3.0, 1.4)]),
            ],
        );
        assert!(svg.starts_with("<svg") && svg.contains("train") && svg.contains("held-out"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
    }

    /// The x labels of an SVG chart: the texts of `<text>` elements that parse as numbers.
    fn numeric_texts(svg: &str) -> Vec<f64> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split('>').nth(1)?.split('<').next()?.trim().parse().ok())
            .collect()
    }

    #[test]
    fn a_whole_x_axis_ticks_whole_numbers_only() {
        let points = vec![(0.0, 50.0), (1.0, 60.0), (2.0, 55.0), (3.0, 70.0)];
        let whole = Axes::new("accuracy", "round", "%").whole_x();
        let svg = line_chart(
            &whole,
            &[Series::line_and_markers("greedy", points.clone())],
        );
        let ticks: Vec<f64> = numeric_texts(&svg)
            .into_iter()
            .filter(|&v| v <= 3.0)
            .collect();
        assert_eq!(ticks, [0.0, 1.0, 2.0, 3.0], "{svg}");
        let fractional = line_chart(
            &Axes::new("accuracy", "round", "%"),
            &[Series::line_and_markers("greedy", points)],
        );
        assert!(numeric_texts(&fractional).iter().any(|v| v.fract() != 0.0));
    }

    #[test]
    fn intervals_widen_the_axis_and_labels_are_drawn() {
        let s = Series::markers("votes", vec![(0.5, 0.5)])
            .with_intervals(vec![[0.1, 0.9]])
            .with_labels(vec!["n=12".into()]);
        let (_, ys) = fitted_ranges(std::slice::from_ref(&s));
        assert!(ys.start < 0.1 && ys.end > 0.9, "{ys:?}");
        assert!(line_chart(&Axes::new("c", "x", "y"), &[s]).contains("n=12"));
    }

    #[test]
    fn the_legend_has_a_band_above_the_data() {
        let series: Vec<Series> = (0..3)
            .map(|i| Series::line("s", vec![(0.0, 0.0), (1.0, 1.0 - 0.1 * i as f64)]))
            .collect();
        let (_, ys) = fitted_ranges(&series);
        let above = (ys.end - 1.0) / (ys.end - ys.start);
        assert!((0.25..0.4).contains(&above), "{ys:?}");
    }
}
