//! The report's SVG: in-process request/reply throughput and latency against requests in
//! flight, Agora beside kameo measured in the same run.

use std::path::Path;

use plotters::prelude::*;

use crate::Figures;

/// One point of the sweep: requests in flight, and the figures of Agora and kameo there.
#[derive(Debug, Clone)]
pub struct SweepPoint {
    /// Requests outstanding at once.
    pub in_flight: u64,
    /// Agora's figures at this load.
    pub agora: Figures,
    /// kameo's figures at this load, measured right after Agora's on the same runtime.
    pub kameo: Figures,
}

/// Writes two charts side by side to `path`: round trips per second against requests in
/// flight (Agora and kameo), and Agora's p50 and p99 latency against the same.
pub fn sweep_svg(path: &Path, title: &str, points: &[SweepPoint]) -> Result<(), String> {
    if points.is_empty() {
        return Err("no points to plot".into());
    }
    let max_in_flight = points.iter().map(|p| p.in_flight).max().unwrap_or(1).max(2) as f64;
    let top_rate = points.iter().map(|p| p.agora.per_second().max(p.kameo.per_second())).fold(1.0, f64::max) * 1.1;
    let top_latency = points.iter().map(|p| p.agora.p99_ns as f64 / 1e3).fold(1.0, f64::max) * 1.1;

    let root = SVGBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);

    let mut rate = ChartBuilder::on(&left)
        .caption("round trips per second", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d((1.0..max_in_flight).log_scale(), 0.0..top_rate)
        .map_err(|e| e.to_string())?;
    rate.configure_mesh().x_desc("requests in flight").y_desc("rt/s").draw().map_err(|e| e.to_string())?;
    for (name, color, pick) in [
        ("Agora", BLUE, (|p: &SweepPoint| p.agora.per_second()) as fn(&SweepPoint) -> f64),
        ("kameo 0.22", RED, |p: &SweepPoint| p.kameo.per_second()),
    ] {
        rate.draw_series(LineSeries::new(points.iter().map(|p| (p.in_flight as f64, pick(p))), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    rate.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| e.to_string())?;

    let mut latency = ChartBuilder::on(&right)
        .caption("Agora latency (us)", ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((1.0..max_in_flight).log_scale(), 0.0..top_latency)
        .map_err(|e| e.to_string())?;
    latency.configure_mesh().x_desc("requests in flight").y_desc("us").draw().map_err(|e| e.to_string())?;
    for (name, color, pick) in [
        ("p50", GREEN, (|p: &SweepPoint| p.agora.p50_ns) as fn(&SweepPoint) -> u64),
        ("p99", MAGENTA, |p: &SweepPoint| p.agora.p99_ns),
    ] {
        latency
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.in_flight as f64, pick(p) as f64 / 1e3)),
                color.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    latency.configure_series_labels().border_style(BLACK).background_style(WHITE).draw().map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(rate: u64, p50_ns: u64) -> Figures {
        Figures { round_trips: rate, elapsed_ns: 1_000_000_000, p50_ns, p99_ns: p50_ns * 3 }
    }

    #[test]
    fn a_sweep_is_drawn_with_both_series_and_both_percentiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.svg");
        let points: Vec<SweepPoint> = [1, 4, 16, 64]
            .into_iter()
            .map(|n| SweepPoint {
                in_flight: n,
                agora: figures(500_000 + n * 1000, 1_000 * n),
                kameo: figures(700_000, 900),
            })
            .collect();
        sweep_svg(&path, "test sweep", &points).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "not an SVG: {}", &svg[..svg.len().min(80)]);
        for label in ["Agora", "kameo 0.22", "p50", "p99", "requests in flight", "test sweep"] {
            assert!(svg.contains(label), "the SVG lacks {label:?}");
        }
    }

    #[test]
    fn an_empty_sweep_or_an_unwritable_path_is_an_error_not_a_panic() {
        assert!(sweep_svg(Path::new("/nonexistent-dir/x.svg"), "t", &[]).is_err());
        let point = SweepPoint { in_flight: 1, agora: figures(1, 1), kameo: figures(1, 1) };
        assert!(sweep_svg(Path::new("/nonexistent-dir/x.svg"), "t", &[point]).is_err());
    }
}
