//! Writing the results: a text table on stdout as the run goes, `results.json`, `report.md` and an SVG
//! plot of pause/resume latency against memory size.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::stats::Measurement;

/// Published figures of microVM sandboxes, printed beside ours.
pub const PUBLISHED: &str =
    "Novita/E2B publish: pause ≈ 4 s per GiB of RAM, resume ≈ 1 s, sandbox start ≈ 150 ms.";

/// The header of the progress table.
pub fn table_header() -> String {
    format!(
        "{:<44} {:<40} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}  {}",
        "scenario",
        "parameters",
        "median",
        "p90",
        "p99",
        "min",
        "max",
        "unit",
        "vs same-run reference"
    )
}

/// One row of the progress table.
pub fn table_row(m: &Measurement) -> String {
    let reference = match (&m.reference, m.ratio()) {
        (Some((name, value)), Some(ratio)) => format!("{ratio:.2}× {name} ({value:.3} {})", m.unit),
        _ => String::new(),
    };
    format!(
        "{:<44} {:<40} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>8}  {}",
        m.scenario,
        compact(&m.parameters),
        m.median,
        m.p90,
        m.p99,
        m.min,
        m.max,
        m.unit,
        reference
    )
}

fn compact(parameters: &serde_json::Value) -> String {
    match parameters.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.to_string().trim_matches('"')))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// Writes `results.json`, `report.md` and `latency.svg` into `out`.
pub fn write_all(out: &Path, results: &[Measurement], machine: &str, quick: bool) -> Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    std::fs::write(out.join("latency.svg"), latency_plot(results))?;
    let mut md = String::new();
    writeln!(md, "# Stasis benchmark report\n")?;
    writeln!(
        md,
        "Machine: {machine}. Mode: {}.\n",
        if quick { "quick" } else { "full" }
    )?;
    writeln!(md, "{PUBLISHED}\n")?;
    writeln!(
        md,
        "Each figure is compared with a reference measured in the same run: pause with an fsync'd write"
    )?;
    writeln!(
        md,
        "of the same bytes, resume with a memcpy of them, create with instantiating an empty module; the"
    )?;
    writeln!(
        md,
        "store's starts with a start on an empty data directory, its reaper's kills with the same file work\n\
         done without Stasis (a sandbox-shaped tree removed, two fsyncs).\n"
    )?;
    writeln!(
        md,
        "| scenario | parameters | median | p90 | p99 | min | max | unit | ratio to reference |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---|---|")?;
    for m in results {
        let ratio = match (&m.reference, m.ratio()) {
            (Some((name, _)), Some(r)) => format!("{r:.2}× {name}"),
            _ => String::new(),
        };
        writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
            m.scenario,
            compact(&m.parameters),
            m.median,
            m.p90,
            m.p99,
            m.min,
            m.max,
            m.unit,
            ratio
        )?;
    }
    writeln!(
        md,
        "\n![pause and resume latency against memory size](latency.svg)"
    )?;
    std::fs::write(out.join("report.md"), md)?;
    Ok(())
}

/// A log-log line plot of pause and resume medians against memory size, one line per (operation,
/// contents), drawn as plain SVG.
pub fn latency_plot(results: &[Measurement]) -> String {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in results
        .iter()
        .filter(|m| m.scenario == "pause" || m.scenario == "resume")
    {
        let (Some(mib), Some(contents)) = (
            m.parameters["mib"].as_f64(),
            m.parameters["contents"].as_str(),
        ) else {
            continue;
        };
        let name = format!("{} ({contents})", m.scenario);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push((mib, m.median)),
            None => series.push((name, vec![(mib, m.median)])),
        }
    }
    let points = series.iter().flat_map(|(_, p)| p.iter().copied());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::MAX, 0.0f64);
    for (x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y.max(1e-3));
        y_max = y_max.max(y);
    }
    if y_max <= 0.0 {
        y_min = 0.01;
        y_max = 1.0;
    }
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 70.0, 200.0, 30.0, 50.0);
    let lx = |x: f64| left + (x.max(1.0).log10() / x_max.log10().max(1.0)) * (w - left - right);
    let (ly0, ly1) = (
        y_min.log10().floor(),
        y_max.log10().ceil().max(y_min.log10().floor() + 1.0),
    );
    let ly = |y: f64| top + (1.0 - (y.max(1e-3).log10() - ly0) / (ly1 - ly0)) * (h - top - bottom);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">Stasis pause/resume latency vs memory touched (log-log)</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<text x="{}" y="{}" text-anchor="middle">memory touched (MiB)</text>
<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">median latency (ms)</text>
"#,
        w / 2.0,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom,
        (left + w - right) / 2.0,
        h - 12.0,
        h / 2.0,
        h / 2.0
    );
    let mut tick = 1.0;
    while tick <= x_max * 1.001 {
        let x = lx(tick);
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="black"/><text x="{x}" y="{}" text-anchor="middle">{tick}</text>"#,
            h - bottom,
            h - bottom + 5.0,
            h - bottom + 18.0
        );
        tick *= 4.0;
    }
    let mut decade = ly0;
    while decade <= ly1 {
        let value = 10f64.powf(decade);
        let y = ly(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{value}</text>"##,
            left,
            w - right,
            left - 6.0,
            y + 4.0
        );
        decade += 1.0;
    }
    for (i, (name, points)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", lx(x), ly(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for &(x, y) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                lx(x),
                ly(y)
            );
        }
        let ly_legend = top + 20.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{color}"/><text x="{}" y="{}">{name}</text>"#,
            w - right + 12.0,
            ly_legend - 10.0,
            w - right + 30.0,
            ly_legend
        );
    }
    svg.push_str("</svg>\n");
    svg
}
