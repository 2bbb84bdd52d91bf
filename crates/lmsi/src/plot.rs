//! SVG line charts (plotters) for loss curves and the run report.

use plotters::prelude::*;

/// One named series of points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    /// Draw markers at the points instead of a line.
    pub markers: bool,
}

/// An SVG line chart of `series`, 720x420, axes fitted to the data.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points().filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let pad = |lo: f64, hi: f64| {
        let span = (hi - lo).abs().max(1e-9);
        (lo - 0.05 * span, hi + 0.05 * span)
    };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        draw(&root, title, x_label, y_label, series, (x0..x1, y0..y1))
            .expect("drawing into a string cannot fail");
        root.present().expect("drawing into a string cannot fail");
    }
    svg
}

type Ranges = (std::ops::Range<f64>, std::ops::Range<f64>);

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    (xs, ys): Ranges,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(xs, ys)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()?;
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    for (i, s) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let drawn = if s.markers {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))?
        } else {
            chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))?
        };
        drawn.label(s.name).legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
        });
    }
    chart
        .configure_series_labels()
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
            "loss",
            "step",
            "loss",
            &[
                Series {
                    name: "train",
                    points: vec![(1.0, 2.0), (2.0, 1.5), (3.0, 1.2)],
                    markers: false,
                },
                Series {
                    name: "held-out",
                    points: vec![(3.0, 1.4)],
                    markers: true,
                },
            ],
        );
        assert!(svg.starts_with("<svg") && svg.contains("train") && svg.contains("held-out"));
        assert!(svg.contains("<polyline") || svg.contains("<path"));
    }
}
