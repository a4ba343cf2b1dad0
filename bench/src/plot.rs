//! SVG plots of a side-by-side run (plotters' SVG backend: text is left to the viewer's
//! fonts, so drawing needs no font files on this machine).
//!
//! * [`throughput`]: loss-free datagrams/s per balancer (bars: medians; dots: repetitions).
//! * [`latency`]: one-way latency percentiles per balancer at the fixed rate (log scale).
//! * [`failover`]: datagrams per backend per interval around one backend's death.

use std::path::Path;

use plotters::prelude::*;

use crate::traffic::measure::FailoverRun;
use crate::traffic::results::Results;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

const PALETTE: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Bars of the median loss-free rate per balancer, with every repetition as a dot.
///
/// # Errors
/// When the file cannot be written.
pub fn throughput(r: &Results, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let n = r.peers.len().max(1);
    let top = r
        .peers
        .iter()
        .flat_map(|p| {
            p.loss_free_runs
                .iter()
                .copied()
                .chain([p.loss_free_per_sec])
        })
        .fold(1.0f64, f64::max)
        / 1e3
        * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Loss-free datagrams/s (loss < 0.01 %), median of repetitions",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)?;
    let names: Vec<String> = r.peers.iter().map(|p| p.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("thousand datagrams/s")
        .draw()?;
    chart.draw_series(r.peers.iter().enumerate().map(|(i, p)| {
        let x = i as f64;
        Rectangle::new(
            [(x - 0.3, 0.0), (x + 0.3, p.loss_free_per_sec / 1e3)],
            color(i).mix(0.8).filled(),
        )
    }))?;
    chart.draw_series(r.peers.iter().enumerate().flat_map(|(i, p)| {
        p.loss_free_runs
            .iter()
            .map(move |&v| Circle::new((i as f64, v / 1e3), 4, BLACK.filled()))
    }))?;
    chart.draw_series(r.peers.iter().enumerate().map(|(i, p)| {
        Text::new(
            format!("{:.0}k", p.loss_free_per_sec / 1e3),
            (i as f64 - 0.1, p.loss_free_per_sec / 1e3 + top * 0.04),
            ("sans-serif", 16),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// Latency percentiles (p50 … max) per balancer at the fixed rate, log scale.
///
/// # Errors
/// When the file cannot be written.
pub fn latency(r: &Results, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let labels = ["p50", "p90", "p99", "p99.9", "max"];
    let values = |p: &crate::traffic::results::PeerSummary| {
        [
            p.latency.p50_us,
            p.latency.p90_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.latency.max_us,
        ]
    };
    let hi = r.peers.iter().flat_map(&values).fold(10.0f64, f64::max) * 2.0;
    let lo = r
        .peers
        .iter()
        .flat_map(&values)
        .filter(|v| *v > 0.0)
        .fold(hi, f64::min)
        .max(0.1)
        / 2.0;
    let rate = r.peers.first().map_or(0, |p| p.latency_rate);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("One-way latency at {rate} datagrams/s (median of repetitions)"),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.3f64..(labels.len() as f64 - 0.7), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                labels
                    .get(i as usize)
                    .map_or(String::new(), |s| (*s).to_owned())
            } else {
                String::new()
            }
        })
        .y_desc("microseconds (log)")
        .draw()?;
    for (i, p) in r.peers.iter().enumerate() {
        let pts: Vec<(f64, f64)> = values(p)
            .iter()
            .enumerate()
            .map(|(k, v)| (k as f64, v.max(lo)))
            .collect();
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(p.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Datagrams per backend per interval, the lost ones, and when the backend died.
///
/// # Errors
/// When the file cannot be written.
pub fn failover(f: &FailoverRun, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let dt = f.bucket_ms as f64 / 1e3;
    let n = f.sent.len();
    let t_end = (n as f64 * dt).max(dt);
    let top = f
        .received
        .iter()
        .flatten()
        .chain(f.lost.iter())
        .copied()
        .max()
        .unwrap_or(1) as f64
        * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{}: datagrams per backend per {} ms at {}/s; backend {} dies at {:.1} s",
                f.name,
                f.bucket_ms,
                f.rate,
                f.killed + 1,
                f.kill_at_secs
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_end, 0f64..top.max(1.0))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(format!("datagrams per {} ms", f.bucket_ms))
        .draw()?;
    // The first and last intervals are usually partial: leave them out.
    let upto = n.saturating_sub(1).max(1);
    for (i, series) in f.received.iter().enumerate() {
        let c = color(i);
        let pts: Vec<(f64, f64)> = series
            .iter()
            .take(upto)
            .enumerate()
            .skip(1)
            .map(|(k, &v)| (k as f64 * dt, v as f64))
            .collect();
        let name = f.backends.get(i).cloned().unwrap_or_default();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(format!("backend {} ({name})", i + 1))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    let lost: Vec<(f64, f64)> = f
        .lost
        .iter()
        .take(upto)
        .enumerate()
        .skip(1)
        .map(|(k, &v)| (k as f64 * dt, v as f64))
        .collect();
    chart
        .draw_series(LineSeries::new(lost, BLACK.stroke_width(1)))?
        .label("lost (sent − received)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(f.kill_at_secs, 0.0), (f.kill_at_secs, top)],
        RED.stroke_width(1),
    )))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::results::{PeerSummary, Results};

    #[test]
    fn plots_render_to_svg() {
        let dir = tempfile::tempdir().unwrap();
        let peer = |name: &str, lf: f64| PeerSummary {
            name: name.into(),
            loss_free_per_sec: lf,
            loss_free_runs: vec![lf * 0.9, lf],
            latency_rate: 20_000,
            latency: crate::traffic::Latency {
                count: 1,
                p50_us: 20.0,
                p90_us: 40.0,
                p99_us: 90.0,
                p999_us: 300.0,
                max_us: 900.0,
                mean_us: 25.0,
            },
            ..PeerSummary::default()
        };
        let r = Results {
            peers: vec![peer("spray", 150_000.0), peer("nginx", 60_000.0)],
            ..Results::default()
        };
        throughput(&r, &dir.path().join("t.svg")).unwrap();
        latency(&r, &dir.path().join("l.svg")).unwrap();
        let f = FailoverRun {
            name: "spray".into(),
            rate: 20_000,
            bucket_ms: 100,
            kill_at_secs: 1.0,
            killed: 1,
            sent: vec![2000; 30],
            backends: vec!["a".into(), "b".into(), "c".into()],
            received: vec![
                vec![666; 30],
                [vec![666; 10], vec![0; 20]].concat(),
                vec![667; 30],
            ],
            lost: [vec![0; 10], vec![666; 20]].concat(),
            ..FailoverRun::default()
        };
        failover(&f, &dir.path().join("f.svg")).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("t.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("spray") && svg.contains("150k"));
    }
}
