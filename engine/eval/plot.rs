//! PNG line charts of metric@k against k (secure@k, pass@k), with plotters.
//! Text needs a TrueType font: DejaVu Sans from the system (Debian
//! `fonts-dejavu-core`, installed by tools/setup.sh) or `$VUL2SAFE_FONT`.

use anyhow::{anyhow, Context, Result};
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

const FONT_CANDIDATES: &[&str] = &["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];

/// Registers the font once; plotters keeps it for the process's lifetime.
fn ensure_font() -> Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let path =
            std::env::var("VUL2SAFE_FONT").ok().or_else(|| FONT_CANDIDATES.iter().find(|p| Path::new(p).exists()).map(|p| p.to_string()));
        let path = path.ok_or("no TrueType font found: install fonts-dejavu-core (tools/setup.sh) or set VUL2SAFE_FONT")?;
        let bytes: &'static [u8] = Box::leak(std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).map_err(|_| format!("{path}: not a usable font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// metric@k against k: each series is a name and its `(k, value)` points, values in [0, 1].
pub fn plot_at_k(path: &Path, title: &str, y_label: &str, series: &[(String, Vec<(usize, f64)>)]) -> Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> =
        series.iter().map(|(n, p)| (n.clone(), p.iter().map(|&(k, v)| (k as f64, v)).collect())).collect();
    plot_lines(path, title, "k (samples per task)", y_label, &series, (0.0, 1.0))
}

/// A line chart of named series over a shared x axis, y in `y_range`.
pub fn plot_lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    y_range: (f64, f64),
) -> Result<()> {
    ensure_font()?;
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let (x_min, x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let (x_min, x_max) = if x_min < x_max { (x_min, x_max) } else { (0.0, 1.0) };
    let root = BitMapBackend::new(path, (720, 440)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(x_min..x_max, y_range.0..y_range.1)?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let color = Palette99::pick(i).mix(0.9);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(points.iter().map(|&(k, v)| Circle::new((k, v), 3, color.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("{e}")).with_context(|| format!("drawing {}", path.display()))
}

/// Plots `keys` of a run's metrics.jsonl against `x_key` into `png`; a missing
/// font or an empty log is reported, not fatal (plots are a convenience).
pub fn plot_metrics(run: &Path, x_key: &str, keys: &[&str], png: &str, title: &str) -> Option<String> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).ok()?;
    let rows: Vec<serde_json::Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let series: Vec<(String, Vec<(f64, f64)>)> = keys
        .iter()
        .map(|k| (k.to_string(), rows.iter().filter_map(|r| Some((r[x_key].as_f64()?, r[*k].as_f64()?))).collect::<Vec<_>>()))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    if series.is_empty() || !lo.is_finite() {
        return Some("no metrics to plot".into());
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    plot_lines(&run.join(png), title, x_key, "value", &series, (lo - pad, hi + pad)).err().map(|e| format!("{e:#}"))
}
