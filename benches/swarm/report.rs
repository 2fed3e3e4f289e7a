//! Turning runs into text: a detailed block per system and markdown tables.

use super::config::System;
use super::loopback::LoopbackRun;
use super::processes::Usage;
use super::systems::{Bench, SystemRun};
use super::units::{mib, mib_f};

/// The value at percentile `p` (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn cpu(usages: &[Usage]) -> (f64, f64) {
    let v: Vec<f64> = usages.iter().map(|u| u.cpu_secs).collect();
    (percentile(&v, 0.5), percentile(&v, 1.0))
}

fn rss(usages: &[Usage]) -> (f64, f64) {
    let v: Vec<f64> = usages.iter().map(|u| u.peak_rss_bytes as f64).collect();
    (percentile(&v, 0.5), percentile(&v, 1.0))
}

/// A few lines on one system's run.
pub fn detail(bench: &Bench<'_>, run: &SystemRun) -> String {
    let t = &run.completion_secs;
    let bound = bench.bound_secs();
    let max = percentile(t, 1.0);
    let (cpu_med, cpu_max) = cpu(&run.receivers);
    let (rss_med, rss_max) = rss(&run.receivers);
    let per_receiver: Vec<String> = t.iter().map(|s| format!("{s:.2}")).collect();
    let mut text = format!(
        "{} receivers complete and verified; completion p50 {:.2} s, p99 {:.2} s, max {max:.2} s; Kumar-Ross bound {bound:.2} s, max/bound {:.2}\n\
         per receiver (s): {}\n\
         origin sent {} ({:.2}x the payload); origin CPU {:.2} s, peak RSS {}\n\
         receivers: CPU median {cpu_med:.2} s, max {cpu_max:.2} s; peak RSS median {}, max {}",
        t.len(),
        percentile(t, 0.5),
        percentile(t, 0.99),
        max / bound,
        per_receiver.join(" "),
        mib(run.origin_sent_bytes),
        run.origin_sent_bytes as f64 / bench.config.payload_bytes as f64,
        run.origin.cpu_secs,
        mib(run.origin.peak_rss_bytes),
        mib_f(rss_med),
        mib_f(rss_max),
    );
    if let Some(tracker) = run.tracker {
        text.push_str(&format!(
            "\ntracker: CPU {:.2} s, peak RSS {}",
            tracker.cpu_secs,
            mib(tracker.peak_rss_bytes)
        ));
    }
    text
}

/// The header of the results table; `benches/README.md` has the same columns.
pub const HEADER: &str = "| system | p50 s | p99 s | max s | bound s | max / bound | origin sent | origin CPU s | origin peak RSS | receiver CPU s (median / max) | receiver peak RSS (median / max) |\n\
    |---|---|---|---|---|---|---|---|---|---|---|";

/// One markdown row per system.
pub fn table(bench: &Bench<'_>, results: &[(System, anyhow::Result<SystemRun>)]) -> String {
    let bound = bench.bound_secs();
    let mut text = format!(
        "{} hosts (1 origin, {} receivers), {} up and down per host, {} payload, {} pieces; Kumar-Ross bound {bound:.2} s\n\n{HEADER}",
        bench.config.hosts,
        bench.config.receivers(),
        bench.config.rate,
        mib(bench.config.payload_bytes),
        mib(bench.config.piece_bytes()),
    );
    for (system, result) in results {
        let row = match result {
            Ok(run) => {
                let t = &run.completion_secs;
                let (cpu_med, cpu_max) = cpu(&run.receivers);
                let (rss_med, rss_max) = rss(&run.receivers);
                format!(
                    "| {system} | {:.2} | {:.2} | {:.2} | {bound:.2} | {:.2} | {} ({:.2}x) | {:.2} | {} | {cpu_med:.2} / {cpu_max:.2} | {} / {} |",
                    percentile(t, 0.5),
                    percentile(t, 0.99),
                    percentile(t, 1.0),
                    percentile(t, 1.0) / bound,
                    mib(run.origin_sent_bytes),
                    run.origin_sent_bytes as f64 / bench.config.payload_bytes as f64,
                    run.origin.cpu_secs,
                    mib(run.origin.peak_rss_bytes),
                    mib_f(rss_med),
                    mib_f(rss_max),
                )
            }
            Err(e) => {
                let reason = format!("{e:#}").replace('|', "/");
                let short: String = reason.chars().take(200).collect();
                format!("| {system} | failed: {short} | | | | | | | | | |")
            }
        };
        text.push('\n');
        text.push_str(&row);
    }
    text
}

/// The loopback figures as a markdown table.
pub fn loopback_table(run: &LoopbackRun) -> String {
    let mut text = String::from(
        "\n| loopback, one pair, no caps | Gbit/s | vs iperf3 | bytes per CPU-second |\n|---|---|---|---|",
    );
    text.push_str(&format!(
        "\n| iperf3, one TCP stream | {:.2} | 1.00x | |",
        run.iperf_bits_per_sec / 1e9
    ));
    if let Some(s) = &run.shoal {
        let bits = s.bytes as f64 * 8.0 / s.secs;
        text.push_str(&format!(
            "\n| shoal seed + fetch, {} | {:.2} | {:.2}x | fetch {:.2} GB/s, seed {:.2} GB/s |",
            mib(s.bytes),
            bits / 1e9,
            bits / run.iperf_bits_per_sec,
            s.bytes as f64 / s.fetch_cpu_secs / 1e9,
            s.bytes as f64 / s.seed_cpu_secs / 1e9,
        ));
    }
    text
}
