//! What a `bench recovery` reports: a line per run as it ends, then the comparison table on stdout
//! and in `<out>/recovery.md` (with the command line and the machine), every run's figures and the
//! summary in `<out>/recovery.json`, and the chart in `<out>/recovery.svg`.
//!
//! A strategy's figures over its runs are p50 and p99 by nearest rank ([`spread`]); the times leave
//! out runs whose standby took over before the kill (the table says how many); throughput, network
//! and storage are also a ratio to `none`'s p50. The table is built from one column list, so the
//! variant (load and replay instead of throughput, which it does not measure) cannot drift from the
//! ordinary run's.

use std::path::Path;

use serde::Serialize;
use strategies::Strategy;

use super::plan::{Fault, Plan};
use super::watch::RunResult;
pub(super) use crate::bench::stats::machine;
pub use crate::bench::stats::Machine;
use crate::bench::stats::{p50_ratio, ratio_cell, spread, spread_cell, Spread};
use crate::size::ByteSize;

/// One strategy's figures over its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub strategy: String,
    pub runs: usize,
    /// Runs whose standby took over before the kill (left out of the times).
    pub took_over_before_kill: usize,
    /// Steady runs whose standby took over from a live primary under the unpaced load.
    pub steady_false_takeovers: usize,
    pub detection_ms: Option<Spread>,
    pub serving_ms: Option<Spread>,
    pub first_ack_ms: Option<Spread>,
    pub new_ack_ms: Option<Spread>,
    pub all_committed_ms: Option<Spread>,
    pub all_sent_committed_ms: Option<Spread>,
    pub throughput_images_s: Option<Spread>,
    pub throughput_mb_s: Option<Spread>,
    pub network_per_mb: Option<Spread>,
    pub network_per_mb_until_kill: Option<Spread>,
    pub storage_per_mb: Option<Spread>,
    pub store_peak_mb: Option<Spread>,
    pub load_ms: Option<Spread>,
    pub replay_mb_s: Option<Spread>,
    /// p50 ÷ `none`'s p50.
    pub throughput_ratio: Option<f64>,
    pub network_ratio: Option<f64>,
    pub network_until_kill_ratio: Option<f64>,
    pub storage_ratio: Option<f64>,
}

pub(super) fn summarize(results: &[RunResult], strategies: &[Strategy]) -> Vec<Summary> {
    let mut out: Vec<Summary> = strategies
        .iter()
        .map(|s| {
            let rs: Vec<&RunResult> = results.iter().filter(|r| r.strategy == s.name()).collect();
            let f = |g: &dyn Fn(&RunResult) -> Option<f64>| {
                spread(rs.iter().filter_map(|r| g(r)).collect())
            };
            // Times only from runs whose takeover followed the kill.
            let t = |g: &dyn Fn(&RunResult) -> Option<f64>| {
                spread(
                    rs.iter()
                        .filter(|r| r.took_over_before_kill_ms.is_none())
                        .filter_map(|r| g(r))
                        .collect(),
                )
            };
            Summary {
                strategy: s.name().into(),
                runs: rs.len(),
                took_over_before_kill: rs
                    .iter()
                    .filter(|r| r.took_over_before_kill_ms.is_some())
                    .count(),
                steady_false_takeovers: rs.iter().filter(|r| r.steady_false_takeover).count(),
                detection_ms: t(&|r| Some(r.detection_ms)),
                serving_ms: t(&|r| Some(r.serving_ms)),
                first_ack_ms: t(&|r| r.first_ack_ms),
                new_ack_ms: t(&|r| r.new_ack_ms),
                all_committed_ms: t(&|r| Some(r.all_committed_ms)),
                all_sent_committed_ms: t(&|r| Some(r.all_sent_committed_ms)),
                throughput_images_s: f(&|r| r.throughput_images_s),
                throughput_mb_s: f(&|r| r.throughput_mb_s),
                network_per_mb: f(&|r| Some(r.network_per_mb)),
                network_per_mb_until_kill: f(&|r| Some(r.network_per_mb_until_kill)),
                storage_per_mb: f(&|r| Some(r.storage_per_mb)),
                store_peak_mb: f(&|r| Some(r.store_peak_bytes as f64 / 1e6)),
                load_ms: t(&|r| Some(r.load_ms)),
                replay_mb_s: t(&|r| r.replay_mb_s),
                throughput_ratio: None,
                network_ratio: None,
                network_until_kill_ratio: None,
                storage_ratio: None,
            }
        })
        .collect();
    let base = out.iter().find(|s| s.strategy == "none").cloned();
    if let Some(b) = base {
        for s in &mut out {
            s.throughput_ratio = p50_ratio(s.throughput_images_s, b.throughput_images_s);
            s.network_ratio = p50_ratio(s.network_per_mb, b.network_per_mb);
            s.network_until_kill_ratio =
                p50_ratio(s.network_per_mb_until_kill, b.network_per_mb_until_kill);
            s.storage_ratio = p50_ratio(s.storage_per_mb, b.storage_per_mb);
        }
    }
    out
}

fn runs_cell(r: &Summary) -> String {
    let mut notes = Vec::new();
    if r.took_over_before_kill > 0 {
        notes.push(format!(
            "{} took over before the kill: times left out",
            r.took_over_before_kill
        ));
    }
    if r.steady_false_takeovers > 0 {
        notes.push(format!(
            "{} false takeovers in the steady run",
            r.steady_false_takeovers
        ));
    }
    if notes.is_empty() {
        r.runs.to_string()
    } else {
        format!("{} ({})", r.runs, notes.join("; "))
    }
}

/// The table: one column list for both kinds of run (the variant has load and replay instead of
/// throughput, which it does not measure).
fn markdown_table(rows: &[Summary], variant: bool) -> String {
    type Column = (&'static str, fn(&Summary) -> String);
    let mut columns: Vec<Column> = vec![
        ("strategy", |r| r.strategy.clone()),
        ("runs", runs_cell),
        ("detection ms", |r| spread_cell(r.detection_ms, 0)),
        ("serving ms", |r| spread_cell(r.serving_ms, 0)),
    ];
    if variant {
        columns.push(("load ms", |r| spread_cell(r.load_ms, 0)));
        columns.push(("replay MB/s", |r| spread_cell(r.replay_mb_s, 0)));
    }
    columns.extend::<[Column; 4]>([
        ("first ack ms", |r| spread_cell(r.first_ack_ms, 0)),
        ("new ack ms", |r| spread_cell(r.new_ack_ms, 0)),
        ("all committed ms", |r| spread_cell(r.all_committed_ms, 0)),
        ("all sent committed ms", |r| {
            spread_cell(r.all_sent_committed_ms, 0)
        }),
    ]);
    if !variant {
        columns.extend::<[Column; 2]>([
            ("throughput images/s", |r| {
                spread_cell(r.throughput_images_s, 0) + &ratio_cell(r.throughput_ratio)
            }),
            ("throughput MB/s", |r| spread_cell(r.throughput_mb_s, 1)),
        ]);
    }
    columns.extend::<[Column; 4]>([
        ("network MB per MB until kill", |r| {
            spread_cell(r.network_per_mb_until_kill, 2) + &ratio_cell(r.network_until_kill_ratio)
        }),
        ("network MB per MB", |r| {
            spread_cell(r.network_per_mb, 2) + &ratio_cell(r.network_ratio)
        }),
        ("storage MB per MB", |r| {
            spread_cell(r.storage_per_mb, 2) + &ratio_cell(r.storage_ratio)
        }),
        ("checkpoint store peak MB", |r| {
            spread_cell(r.store_peak_mb, 1)
        }),
    ]);
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut t = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    t.push_str("|---|");
    t.push_str(&"---:|".repeat(columns.len() - 1));
    t.push('\n');
    for r in rows {
        t.push_str(&line(columns.iter().map(|(_, f)| f(r)).collect()));
    }
    t
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'a str,
    machine: &'a Machine,
    fault: Fault,
    variant_checkpoint_mb: Option<u64>,
    throughput_note: &'a str,
    summary: &'a [Summary],
    runs: &'a [RunResult],
}

/// Bars of p50 time to new ack and time to all committed per strategy, p99 as whiskers.
/// What the times are counted from.
fn fault_moment(plan: &Plan) -> &'static str {
    match plan.fault {
        Fault::Kill => "SIGKILL of the primary",
        Fault::Partition => "cut-off of the primary (its link down)",
    }
}

fn chart(path: &Path, rows: &[Summary], title: &str, moment: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let secs =
        |s: Option<Spread>| s.map_or((0.0, 0.0), |s| (s.p50.max(0.0) / 1e3, s.p99.max(0.0) / 1e3));
    let bars: Vec<[(f64, f64); 2]> = rows
        .iter()
        .map(|r| [secs(r.new_ack_ms), secs(r.all_committed_ms)])
        .collect();
    let top = bars
        .iter()
        .flat_map(|b| b.iter().map(|(_, p99)| *p99))
        .fold(0.1, f64::max)
        * 1.2;
    let names: Vec<String> = rows.iter().map(|r| r.strategy.clone()).collect();
    let n = rows.len();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                names[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc(format!("seconds after the {moment}"))
        .draw()
        .map_err(|e| err(&e))?;
    let series = [
        (
            "time to new ack (bar p50, whisker p99)",
            RGBColor(0x1f, 0x77, 0xb4),
            -0.4,
            -0.02,
        ),
        (
            "time to all committed (bar p50, whisker p99)",
            RGBColor(0xd6, 0x27, 0x28),
            0.02,
            0.4,
        ),
    ];
    for (k, (label, color, lo, hi)) in series.into_iter().enumerate() {
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x + lo, 0.0), (x + hi, b[k].0)], color.mix(0.8).filled())
        }))
        .map_err(|e| err(&e))?
        .label(label)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        c.draw_series(bars.iter().enumerate().flat_map(|(i, b)| {
            let mid = i as f64 + (lo + hi) / 2.0;
            let (p50, p99) = b[k];
            [
                PathElement::new(vec![(mid, p50), (mid, p99)], BLACK.stroke_width(1)),
                PathElement::new(
                    vec![(mid - 0.06, p99), (mid + 0.06, p99)],
                    BLACK.stroke_width(1),
                ),
            ]
        }))
        .map_err(|e| err(&e))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The line that opens a bench: what will run, on how many cores.
pub(super) fn print_plan(plan: &Plan, m: &Machine) {
    println!(
        "bench recovery: {} × {} runs; images of {}; {}; kill after {:?}, sender on for {:?} after; batch interval {:?}; passive carry {:?}; {} cores",
        plan.strategies.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        plan.runs,
        ByteSize(plan.image_len),
        match plan.checkpoint_mb {
            Some(mb) => format!("variant: {mb} MB of uncommitted blocks at the primary, then kill"),
            None if plan.steady_images == 0 => format!(
                "no steady run, failover run {} images at {}/s",
                plan.failover_images(),
                plan.rate
            ),
            None => format!(
                "steady run {} images unpaced, failover run {} images at {}/s",
                plan.steady_images,
                plan.failover_images(),
                plan.rate
            ),
        },
        plan.kill_after,
        plan.after_kill,
        plan.batch_interval,
        plan.carry,
        m.cores
    );
    if plan.fault == Fault::Partition {
        println!(
            "fault: the primary's network link goes down instead of a SIGKILL (every node and the sender on a host of its own); it comes back {:?} after the takeover (none: after {:?} of outage), and the replaced primary must fence itself",
            plan.heal_after, plan.heal_after
        );
    }
}

/// The line of a run as it ends.
pub(super) fn print_run(s: Strategy, r: &RunResult) {
    println!(
        "  {s} run {}: detection {:.0} ms, serving {:.0} ms, first ack {}, new ack {}, all committed {:.0} ms, all sent committed {:.0} ms, {}, network {:.2} MB/MB, storage {:.2} MB/MB, store peak {:.1} MB{}; {}",
        r.run,
        r.detection_ms,
        r.serving_ms,
        r.first_ack_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
        r.new_ack_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
        r.all_committed_ms,
        r.all_sent_committed_ms,
        match (r.throughput_images_s, r.throughput_mb_s) {
            (Some(i), Some(mb)) => format!("steady {i:.0} images/s {mb:.1} MB/s"),
            _ => "no steady run".into(),
        },
        r.network_per_mb,
        r.storage_per_mb,
        r.store_peak_bytes as f64 / 1e6,
        r.replay_mb_s.map_or(String::new(), |v| format!(", replay {v:.0} MB/s")),
        r.verify
    );
}

/// The table on stdout, then recovery.md, recovery.json and recovery.svg in `plan.out`.
pub(super) fn write(
    plan: &Plan,
    command: &str,
    m: &Machine,
    results: &[RunResult],
) -> anyhow::Result<()> {
    let variant = plan.checkpoint_mb.is_some();
    let rows = summarize(results, &plan.strategies);
    let note = if variant {
        "variant: no steady run (the batch interval is long, so that blocks stay uncommitted)"
    } else if plan.steady_images == 0 {
        "throughput: not measured (no steady run: --quick or --steady-images 0)"
    } else {
        "throughput: a separate unpaced run on its own nodes before each failover run, every image over first send to the last one in the output"
    };
    let table = markdown_table(&rows, variant);
    println!("\n{table}\np50 / p99 over runs; (×r) = p50 ÷ none's p50; {note}.");
    let md = format!(
        "# bench recovery\n\n`{command}`\n\nMachine: {} cores ({}), Linux {}, {}.\n\n{table}\n\
         p50 / p99 over runs (nearest rank); (×r) = p50 ÷ none's p50. Times are ms after the {}; \
         \"all committed\" is over images released before the kill, \"all sent committed\" over \
         images sent before it. {note}. Every run was verified: no released image lost or duplicated.\n",
        m.cores,
        m.cpu,
        m.kernel,
        m.date,
        fault_moment(plan)
    );
    std::fs::write(plan.out.join("recovery.md"), md)?;
    let json = serde_json::to_string_pretty(&Report {
        command,
        machine: m,
        fault: plan.fault,
        variant_checkpoint_mb: plan.checkpoint_mb,
        throughput_note: note,
        summary: &rows,
        runs: results,
    })?;
    std::fs::write(plan.out.join("recovery.json"), json)?;
    let title = match plan.checkpoint_mb {
        Some(mb) => format!(
            "Recovery with {mb} MB uncommitted at the kill ({} runs)",
            plan.runs
        ),
        None => format!(
            "Recovery after SIGKILL of the primary ({} runs, {}/s)",
            plan.runs, plan.rate
        ),
    };
    chart(
        &plan.out.join("recovery.svg"),
        &rows,
        &title,
        fault_moment(plan),
    )?;
    println!(
        "bench recovery: wrote {}, recovery.json and recovery.svg",
        plan.out.join("recovery.md").display()
    );
    Ok(())
}
