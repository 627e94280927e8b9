//! SVG chart of one simulated day: clearing price and traded energy per interval.
//!
//! Two panels share an x axis in hours of the day: on top the clearing price (µT/Wh,
//! drawn as a line broken wherever an interval did not clear), below the traded energy
//! (Wh, one bar per interval). Only plotters' SVG backend and line series are used, and
//! text is laid out with plotters' built-in approximate font metrics, so no system fonts
//! are needed.

use std::path::Path;

use plotters::prelude::*;

use super::INTERVAL_MINUTES;

/// Width of the chart in pixels.
pub const WIDTH: u32 = 900;
/// Height of the chart in pixels.
pub const HEIGHT: u32 = 600;

/// One interval's market outcome: clearing price in µT/Wh (`None` if nothing traded)
/// and traded energy in Wh.
pub type IntervalOutcome = (Option<u64>, u64);

/// Writes the day chart for `intervals` (interval 0 starts at 00:00) as an SVG file at
/// `path`, replacing any file there.
///
/// The x axis covers 24 hours, or longer if more than 96 intervals are given. Errors
/// (from drawing or from writing the file) are returned as text.
pub fn plot_day_svg(path: &Path, intervals: &[IntervalOutcome]) -> Result<(), String> {
    let svg = render_day_svg(intervals)?;
    std::fs::write(path, svg).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Renders the day chart for `intervals` to an SVG document in memory (see
/// [`plot_day_svg`]).
pub fn render_day_svg(intervals: &[IntervalOutcome]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, intervals)?;
        root.present().map_err(|e| format!("finishing the SVG: {e}"))?;
    }
    Ok(svg)
}

/// Hours per interval.
fn interval_hours() -> f64 {
    f64::from(INTERVAL_MINUTES) / 60.0
}

/// Upper end of a y axis whose data peak at `max`: a little headroom, and at least 1.
fn y_top(max: u64) -> f64 {
    (max as f64 * 1.1).max(1.0)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    intervals: &[IntervalOutcome],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(err)?;

    let hours = (intervals.len() as f64 * interval_hours()).max(24.0);
    let max_price = intervals.iter().filter_map(|&(p, _)| p).max().unwrap_or(0);
    let max_traded = intervals.iter().map(|&(_, t)| t).max().unwrap_or(0);
    let panels = root.split_evenly((2, 1));
    let (top, bottom) = match panels.as_slice() {
        [top, bottom] => (top, bottom),
        _ => return Err("could not split the drawing area".to_string()),
    };

    // Clearing price: one line per run of consecutive cleared intervals, each point at
    // the middle of its interval.
    let mut price_chart = ChartBuilder::on(top)
        .caption("Clearing price", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..hours, 0.0..y_top(max_price))
        .map_err(err)?;
    price_chart
        .configure_mesh()
        .x_desc("hour of day")
        .y_desc("µT/Wh")
        .x_labels(13)
        .x_label_formatter(&|h| format!("{h:.0}"))
        .y_label_formatter(&|p| format!("{p:.0}"))
        .draw()
        .map_err(err)?;
    let mut run: Vec<(f64, f64)> = Vec::new();
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    for (i, &(price, _)) in intervals.iter().enumerate() {
        match price {
            Some(p) => run.push(((i as f64 + 0.5) * interval_hours(), p as f64)),
            None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        runs.push(run);
    }
    for r in runs {
        if let [single] = r.as_slice() {
            // A lone cleared interval: draw a short tick so it is visible.
            let (x, y) = *single;
            let half = interval_hours() / 2.0;
            price_chart
                .draw_series(LineSeries::new([(x - half, y), (x + half, y)], BLUE.stroke_width(2)))
                .map_err(err)?;
        } else {
            price_chart.draw_series(LineSeries::new(r, BLUE.stroke_width(2))).map_err(err)?;
        }
    }

    // Traded energy: one bar per interval.
    let mut traded_chart = ChartBuilder::on(bottom)
        .caption("Traded energy", ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..hours, 0.0..y_top(max_traded))
        .map_err(err)?;
    traded_chart
        .configure_mesh()
        .x_desc("hour of day")
        .y_desc("Wh")
        .x_labels(13)
        .x_label_formatter(&|h| format!("{h:.0}"))
        .y_label_formatter(&|w| format!("{w:.0}"))
        .draw()
        .map_err(err)?;
    traded_chart
        .draw_series(intervals.iter().enumerate().filter(|(_, &(_, t))| t > 0).map(|(i, &(_, t))| {
            let x0 = i as f64 * interval_hours();
            Rectangle::new([(x0, 0.0), (x0 + interval_hours() * 0.9, t as f64)], GREEN.mix(0.7).filled())
        }))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> std::path::PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!("grid-plot-{tag}-{}-{nanos}.svg", std::process::id()))
    }

    #[test]
    fn writes_an_svg_file() {
        let day: Vec<IntervalOutcome> =
            (0..96u64).map(|i| if (24..80).contains(&i) { (Some(100 + i * 2), i * 50) } else { (None, 0) }).collect();
        let path = temp_path("day");
        plot_day_svg(&path, &day).expect("plot");
        let text = std::fs::read_to_string(&path).expect("read back");
        let _ = std::fs::remove_file(&path);
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
        assert!(text.contains("Clearing price") && text.contains("Traded energy"));
        assert!(text.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn renders_empty_and_odd_inputs() {
        for data in [
            vec![],
            vec![(None, 0)],
            vec![(Some(u64::MAX), u64::MAX); 200],
            vec![(Some(5), 1), (None, 0), (Some(6), 2)],
        ] {
            let svg = render_day_svg(&data).expect("render");
            assert!(svg.starts_with("<svg"));
        }
    }

    #[test]
    fn unwritable_path_is_an_error() {
        let path = temp_path("missing-dir").join("nested").join("day.svg");
        assert!(plot_day_svg(&path, &[(Some(1), 1)]).is_err());
    }
}
