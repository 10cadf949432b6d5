//! The simulator's HTML report: one self-contained page (inline SVG, no
//! script, no network) with the figures and four plots: offload and origin
//! egress over time, the spread-time distribution and per-viewer stalls.

use std::fmt::Write as _;

use super::{Report, SimReport};

const W: f64 = 560.0;
const H: f64 = 200.0;
const PAD: f64 = 36.0;
const COLOURS: [&str; 3] = ["#2e7d32", "#ef6c00", "#1565c0"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of several series of (x, y) points.
fn lines(title: &str, y_label: &str, series: &[(&str, Vec<(f64, f64)>)]) -> String {
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let ys = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let x_max = xs.fold(1e-9, f64::max);
    let y_max = ys.fold(1e-9, f64::max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">"#,
        esc(title)
    );
    let _ = write!(
        svg,
        r##"<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{PAD}" y1="8" x2="{PAD}" y2="{b}" stroke="#888"/><text x="4" y="14" font-size="10">{y:.3}</text><text x="4" y="{b}" font-size="10">0</text><text x="{r2}" y="{b2}" font-size="10">{x_max:.0}</text><text x="{PAD}" y="{b2}" font-size="10">{yl}</text>"##,
        b = H - PAD,
        r = W - 8.0,
        r2 = W - 40.0,
        b2 = H - 20.0,
        y = y_max,
        yl = esc(y_label),
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    PAD + x / x_max * (W - PAD - 8.0),
                    (H - PAD) - y / y_max * (H - PAD - 8.0)
                )
            })
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/><text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            path.join(" "),
            W - 150.0,
            20.0 + 14.0 * i as f64,
            esc(name)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn table(runs: &[&Report]) -> String {
    let mut t = String::from(
        "<table><tr><th>policy</th><th>offload</th><th>origin copies / segment</th><th>rebuffering</th><th>stalls</th><th>startup p50 / p95</th><th>spread 95 % p50</th><th>peers / viewer</th><th>signalling / media</th></tr>",
    );
    for r in runs {
        let _ = write!(
            t,
            "<tr><td>{:?}</td><td>{:.2} %</td><td>{:.2}</td><td>{:.4} %</td><td>{}</td><td>{:.0} / {:.0} ms</td><td>{:.0} ms</td><td>{:.1}</td><td>{:.5}</td></tr>",
            r.policy,
            r.offload * 100.0,
            r.origin_copies_per_segment,
            r.rebuffering_ratio * 100.0,
            r.stalls,
            r.startup_time_ms.p50,
            r.startup_time_ms.p95,
            r.spread_time_ms.p50_of_95,
            r.peers_per_viewer,
            r.signalling_overhead
        );
    }
    t.push_str("</table>");
    t
}

/// Renders the report page.
pub fn render(report: &SimReport) -> String {
    let runs: Vec<&Report> = std::iter::once(&report.main)
        .chain(report.baselines.iter())
        .collect();
    let m = &report.main;
    let name = |r: &Report| format!("{:?}", r.policy);
    let over_time = |f: fn(&Report) -> &Vec<(u64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        runs.iter()
            .map(|r| (name(r), f(r).iter().map(|&(t, v)| (t as f64, v)).collect()))
            .collect()
    };
    let offload = over_time(|r| &r.offload_over_time);
    let egress = over_time(|r| &r.egress_over_time);
    let spread: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            let mut v = r.spread_95_per_segment.clone();
            v.sort_unstable();
            let n = v.len().max(1) as f64;
            (
                name(r),
                v.iter()
                    .enumerate()
                    .map(|(i, &ms)| (ms as f64, (i + 1) as f64 / n))
                    .collect(),
            )
        })
        .collect();
    let stalls: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|r| {
            (
                name(r),
                r.stall_ms_per_viewer
                    .iter()
                    .enumerate()
                    .map(|(i, &ms)| (i as f64, ms as f64))
                    .collect(),
            )
        })
        .collect();

    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Swarmcast simulation: {name}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:12px 0}}td,th{{border-bottom:1px solid #ddd;padding:4px 8px;text-align:right}}th:first-child,td:first-child{{text-align:left}}figure{{display:inline-block;margin:8px}}figcaption{{font-weight:600}}</style></head><body>
<h1>Swarmcast simulation: {name}</h1>
<p>{viewers} viewers (peak), {sessions} sessions, {dur} s, {segs} segments, seed {seed}; simulated in {wall:.1} s, peak memory {rss:.0} MiB.</p>"#,
        name = esc(&m.scenario),
        viewers = m.viewers,
        sessions = m.sessions,
        dur = m.duration_s,
        segs = m.segments,
        seed = m.seed,
        wall = m.wall_s,
        rss = m.peak_rss_bytes as f64 / 1_048_576.0,
    );
    page.push_str(&table(&runs));
    page.push_str(&lines(
        "Offload over time (10 s windows)",
        "offload",
        &borrow(&offload),
    ));
    page.push_str(&lines(
        "Origin egress over time (copies per segment)",
        "copies",
        &borrow(&egress),
    ));
    page.push_str(&lines(
        "Spread time to 95 % of viewers (CDF over segments, ms)",
        "share",
        &borrow(&spread),
    ));
    page.push_str(&lines(
        "Stall time per viewer (ms, viewers sorted)",
        "ms",
        &borrow(&stalls),
    ));
    page.push_str("</body></html>\n");
    page
}

fn borrow(v: &[(String, Vec<(f64, f64)>)]) -> Vec<(&str, Vec<(f64, f64)>)> {
    v.iter().map(|(n, p)| (n.as_str(), p.clone())).collect()
}
