//! A scalar measure of cross-pool mispricing, and an SVG chart of it over time.
//!
//! The **spread** of a cycle is the product of its hops' marginal rates after
//! fees, minus one: `exp(-w) - 1` where `w` is the cycle's log weight (see
//! [`edge_weight`](super::arbitrage::edge_weight)). It is the fractional
//! gain of an infinitesimal trade around the loop:
//!
//! * `> 0`: the loop is an arbitrage (a marginal trade gains that fraction);
//! * `= 0`: break-even;
//! * `< 0`: fees exceed the mispricing. With consistent prices the spread of
//!   a loop is just its fee cost, e.g. `0.997^3 - 1 = -0.897 %` for three
//!   0.3 % pools, so a chart shows how close the market is to arbitrage, not
//!   only whether it is.
//!
//! The spread of a market is that of its best cycle (largest spread), as
//! found by [`best_cycle_through`]. It
//! is a marginal measure: the realisable profit also depends on depth, see
//! [`optimise`](super::arbitrage::optimise).

use super::amm::{Pool, Token};
use super::arbitrage::best_cycle_through;
use plotters::prelude::*;
use std::path::Path;

/// Spread of the best cycle through `reference`: `exp(-w) - 1` for the
/// lightest cycle through it (a fraction: `0.01` is 1 %). `None` if no cycle
/// passes through `reference`.
pub fn spread_through(pools: &[Pool], reference: &Token) -> Option<f64> {
    best_cycle_through(pools, reference).map(|(_, w)| (-w).exp() - 1.0)
}

/// Spread of the best cycle in the whole market: the maximum of
/// [`spread_through`] over every token. `None` if the pools contain no cycle.
pub fn market_spread(pools: &[Pool]) -> Option<f64> {
    let mut tokens: Vec<&Token> = pools.iter().flat_map(|p| [p.token_a(), p.token_b()]).collect();
    tokens.sort();
    tokens.dedup();
    tokens
        .into_iter()
        .filter_map(|t| spread_through(pools, t))
        .fold(None, |best: Option<f64>, s| Some(best.map_or(s, |b| b.max(s))))
}

/// A time series of market spreads, ready for [`plot_svg`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpreadSeries {
    /// `(market time in seconds, spread as a fraction)` samples, in the
    /// order recorded.
    pub points: Vec<(f64, f64)>,
}

impl SpreadSeries {
    /// An empty series.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the [`market_spread`] of `pools` at `time` and returns it;
    /// nothing is recorded (and `None` returned) if the pools have no cycle.
    pub fn record(&mut self, time: f64, pools: &[Pool]) -> Option<f64> {
        let s = market_spread(pools)?;
        self.points.push((time, s));
        Some(s)
    }

    /// The largest spread recorded, if any.
    pub fn max(&self) -> Option<f64> {
        self.points.iter().map(|&(_, s)| s).reduce(f64::max)
    }
}

/// `(lo, hi)` padded so that the range is never empty or degenerate.
fn padded_range(mut lo: f64, mut hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) || lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        lo -= 0.5;
        hi += 0.5;
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Writes an SVG line chart of `series` to `path`: x is the market time in
/// seconds, y the spread in percent (each spread fraction is multiplied by
/// 100), with a dashed break-even line at 0 %. Points with a non-finite
/// coordinate are skipped; an empty series gives empty axes.
///
/// Errors (as text) if the file cannot be written.
pub fn plot_svg(path: &Path, series: &[(f64, f64)]) -> Result<(), String> {
    let points: Vec<(f64, f64)> =
        series.iter().map(|&(t, s)| (t, s * 100.0)).filter(|(t, s)| t.is_finite() && s.is_finite()).collect();
    let (t_lo, t_hi) =
        points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(t, _)| (lo.min(t), hi.max(t)));
    // Keep 0 % in view so the break-even line is always visible.
    let (s_lo, s_hi) = points.iter().fold((0.0_f64, 0.0_f64), |(lo, hi), &(_, s)| (lo.min(s), hi.max(s)));
    let (t_lo, t_hi) = padded_range(t_lo, t_hi);
    let (s_lo, s_hi) = padded_range(s_lo, s_hi);

    let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Best-cycle arbitrage spread", ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(t_lo..t_hi, s_lo..s_hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("market time (s)")
        .y_desc("best cycle spread (%)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(DashedLineSeries::new(
            [(t_lo, 0.0), (t_hi, 0.0)],
            6,
            4,
            ShapeStyle::from(&BLACK.mix(0.5)).stroke_width(1),
        ))
        .map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn t(s: &str) -> Token {
        Token::new(s)
    }

    fn pool(a: &str, ra: u128, b: &str, rb: u128, fee: u32) -> Pool {
        Pool::new(t(a), ra, t(b), rb, fee).unwrap()
    }

    #[test]
    fn consistent_market_spread_is_the_fee_cost() {
        // Prices multiply to exactly 1 around the loop, so the spread is
        // 0.997^3 - 1 = -0.008973027.
        let pools = vec![
            pool("A", 10_000, "B", 10_000, 30),
            pool("B", 10_000, "C", 20_000, 30),
            pool("C", 20_000, "A", 10_000, 30),
        ];
        let expected = 0.997f64.powi(3) - 1.0;
        for tok in ["A", "B", "C"] {
            let s = spread_through(&pools, &t(tok)).unwrap();
            assert!((s - expected).abs() < 1e-12, "{tok}: {s}");
        }
        assert!((market_spread(&pools).unwrap() - expected).abs() < 1e-12);
    }

    #[test]
    fn mispriced_market_spread_is_positive() {
        // 1 C = 1.1 A in pool 2: spread = 1.1 * 0.997^3 - 1 = 0.0901296...
        let pools = vec![
            pool("A", 10_000, "B", 10_000, 30),
            pool("B", 10_000, "C", 10_000, 30),
            pool("C", 10_000, "A", 11_000, 30),
        ];
        let s = market_spread(&pools).unwrap();
        assert!((s - (1.1 * 0.997f64.powi(3) - 1.0)).abs() < 1e-12, "{s}");
    }

    #[test]
    fn no_cycle_no_spread() {
        let pools = vec![pool("A", 10, "B", 10, 30), pool("B", 10, "C", 10, 30)];
        assert_eq!(market_spread(&pools), None);
        assert_eq!(spread_through(&pools, &t("Z")), None);
        assert_eq!(market_spread(&[]), None);
        let mut series = SpreadSeries::new();
        assert_eq!(series.record(0.0, &pools), None);
        assert!(series.points.is_empty());
        assert_eq!(series.max(), None);
    }

    #[test]
    fn series_records_spread_shrinking_after_arbitrage() {
        // Deep pools, so integer rounding does not dominate (with 10_000-unit
        // reserves the optimal trade is ~120 units and flooring each hop keeps
        // about 1 % of the spread alive).
        let m = 1_000_000u128;
        let mut pools = vec![
            pool("A", 10_000 * m, "B", 10_000 * m, 30),
            pool("B", 10_000 * m, "C", 10_000 * m, 30),
            pool("C", 10_000 * m, "A", 11_000 * m, 30),
        ];
        let mut series = SpreadSeries::new();
        let before = series.record(0.0, &pools).unwrap();
        let opp = super::super::arbitrage::find_opportunity(&pools, &t("A"), u128::MAX).unwrap();
        super::super::arbitrage::execute(&opp.cycle, &mut pools, opp.input).unwrap();
        let after = series.record(1.0, &pools).unwrap();
        assert!(after < before);
        // Sized optimally, the trade leaves the loop at break-even up to the
        // fee-on-input effect: the loop's slope at the optimum is exactly 1,
        // and the fresh marginal rate exceeds a hop's slope by a factor
        // (R_in + x) / (R_in + 0.997 x), about 1 + 0.003 * 1.5 % here.
        assert!(before > 0.09 && after.abs() < 1e-3, "{before} -> {after}");
        assert_eq!(series.points.len(), 2);
        assert_eq!(series.max(), Some(before));
    }

    fn temp_svg(name: &str) -> std::path::PathBuf {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        std::env::temp_dir().join(format!("agora-spread-{name}-{}-{nanos}.svg", std::process::id()))
    }

    #[test]
    fn plot_svg_writes_an_svg_file() {
        let path = temp_svg("series");
        let series: Vec<(f64, f64)> = (0..50)
            .map(|i| {
                let time = f64::from(i) * 0.5;
                (time, 0.02 * (time * 0.7).sin() - 0.009)
            })
            .collect();
        let result = plot_svg(&path, &series);
        let text = std::fs::read_to_string(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(result, Ok(()));
        let text = text.unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(80)]);
        assert!(text.contains("market time (s)"));
        assert!(text.contains("best cycle spread (%)"));
        assert!(text.contains("Best-cycle arbitrage spread"));
    }

    #[test]
    fn plot_svg_handles_degenerate_series() {
        for (name, series) in [
            ("empty", vec![]),
            ("single", vec![(1.0, 0.01)]),
            ("flat", vec![(0.0, 0.0), (1.0, 0.0)]),
            ("nan", vec![(f64::NAN, 0.1), (1.0, f64::INFINITY), (2.0, -0.01)]),
        ] {
            let path = temp_svg(name);
            let result = plot_svg(&path, &series);
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = std::fs::remove_file(&path);
            assert_eq!(result, Ok(()), "{name}");
            assert!(text.starts_with("<svg"), "{name}");
        }
    }

    #[test]
    fn plot_svg_reports_unwritable_path() {
        let dir = temp_svg("missing-dir");
        let path = dir.join("chart.svg");
        assert!(plot_svg(&path, &[(0.0, 0.0)]).is_err());
    }
}
