//! Printing results: a block per step while running, markdown tables at the end, and the
//! side-by-side comparison of several runs (`--compare`).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::run::{Report, StepResult};

/// The goals at 200 sessions.
pub const GOAL_SESSIONS: usize = 200;
pub const GOAL_P90_MS: f64 = 60.0;
pub const GOAL_CPU_PCT_PER_SESSION: f64 = 0.5;
pub const GOAL_RSS_MIB_PER_SESSION: f64 = 2.0;
/// "No upward drift": the last 10 s median at most this much above the first 10 s median.
pub const GOAL_DRIFT_MS: f64 = 5.0;
/// The video issue's goals, per 640×480@30 camera echo session at every N.
pub const GOAL_VIDEO_CPU_PCT_PER_SESSION: f64 = 10.0;
pub const GOAL_VIDEO_P90_MS: f64 = 100.0;

fn opt(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

fn signed(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:+.digits$}"),
        _ => "–".into(),
    }
}

/// Prints one step's results to stdout, as a block of labelled lines.
pub fn print_step(label: &str, s: &StepResult) {
    let mut out = String::new();
    let _ = writeln!(out, "== {label}: N = {}", s.sessions_requested);
    let _ = writeln!(
        out,
        "sessions      {} requested, {} connected ({} at the end, {} with the data channel, {} got RTVI bot-ready), {} failed; all settled {:.1} s after the first started",
        s.sessions_requested,
        s.sessions_connected,
        s.sessions_connected_at_end,
        s.sessions_with_data_channel,
        s.sessions_bot_ready,
        s.sessions_failed,
        s.ramp_secs
    );
    for (reason, count) in &s.failures {
        let _ = writeln!(out, "  failed ×{count}: {reason}");
    }
    let _ = writeln!(
        out,
        "setup         offer→answer p50 {} ms p90 {} ms; offer→connected p50 {} ms p90 {} ms",
        opt(s.answer_p50_ms, 1),
        opt(s.answer_p90_ms, 1),
        opt(s.connect_p50_ms, 1),
        opt(s.connect_p90_ms, 1)
    );
    let back = if s.packets_sent > 0 {
        format!(
            "{:.1}%",
            s.packets_received as f64 / s.packets_sent as f64 * 100.0
        )
    } else {
        "–".into()
    };
    let _ = writeln!(
        out,
        "echo          {} of {} connected sessions received audio; packets back/sent {back} ({} / {} in {:.0} s)",
        s.sessions_echoing, s.sessions_connected, s.packets_received, s.packets_sent, s.window_secs
    );
    match &s.rtt {
        Some(r) => {
            let _ = writeln!(
                out,
                "round trip    p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  (min {:.1}, max {:.1}; {} markers timed of {} sent on {} measured sessions)",
                r.p50_ms, r.p90_ms, r.p99_ms, r.min_ms, r.max_ms, r.count, s.markers_sent, s.sessions_measured
            );
            let _ = writeln!(
                out,
                "drift         first {:.0} s {} ms → last {:.0} s {} ms ({} ms); slope {} ms/min",
                r.edge_secs,
                opt(r.first_ms, 1),
                r.edge_secs,
                opt(r.last_ms, 1),
                signed(r.drift_ms, 1),
                signed(r.slope_ms_per_min, 2)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "round trip    – (no marker came back: {} sent on {} measured sessions)",
                s.markers_sent, s.sessions_measured
            );
        }
    }
    if let Some(v) = &s.video {
        let _ = writeln!(
            out,
            "video         {} of {} connected sessions received video; frames back {} /s per session (fewest {} /s) of {} /s sent; {} slots skipped; {} keyframe requests from the server",
            v.sessions_receiving,
            s.sessions_connected,
            opt(v.fps_received_per_session, 1),
            opt(v.fps_received_min, 1),
            opt(v.fps_sent_per_session, 1),
            v.slots_skipped,
            v.keyframe_requests
        );
        match &v.rtt {
            Some(r) => {
                let _ = writeln!(
                    out,
                    "video RTT     p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  (min {:.1}, max {:.1}; {} frames timed of {} sent on {} measured sessions; drift {} ms)",
                    r.p50_ms, r.p90_ms, r.p99_ms, r.min_ms, r.max_ms, r.count, v.stamps_sent, v.sessions_measured, signed(r.drift_ms, 1)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "video RTT     – (no stamped frame came back: {} sent on {} measured sessions)",
                    v.stamps_sent, v.sessions_measured
                );
            }
        }
        let _ = writeln!(
            out,
            "video decode  {} frames decoded, {} undecodable, {} unreadable stamps, {} unmatched, {} PLIs sent",
            v.frames_decoded, v.decode_errors, v.stamps_unreadable, v.stamps_unmatched, v.plis_sent
        );
    }
    match &s.server {
        Some(p) => {
            let _ = writeln!(
                out,
                "server CPU    {:.1}% of a core; {} % per session",
                p.cpu_pct,
                opt(p.cpu_pct_per_session, 3)
            );
            let _ = writeln!(
                out,
                "server RSS    {:.1} MiB (idle {} MiB, peak {:.1} MiB, {} MiB after closing); {} MiB per session",
                p.rss_mib,
                opt(p.rss_idle_mib, 1),
                p.hwm_mib,
                opt(p.rss_after_close_mib, 1),
                opt(p.rss_mib_per_session, 3)
            );
        }
        None => {
            let _ = writeln!(out, "server        – (no --server-pid)");
        }
    }
    let _ = writeln!(
        out,
        "loadgen       {:.1}% of a core ({} % per session), RSS {:.1} MiB; machine busy {} % of all cores",
        s.loadgen.cpu_pct,
        opt(s.loadgen.cpu_pct_per_session, 3),
        s.loadgen.rss_mib,
        opt(s.machine_busy_pct, 0)
    );
    let _ = writeln!(
        out,
        "send timing   packets left p50 {} ms, p99 {} ms, max {} ms after due; {} skipped; {} send errors",
        s.send_late_p50_ms.map_or("–".into(), |v| v.to_string()),
        s.send_late_p99_ms.map_or("–".into(), |v| v.to_string()),
        s.send_late_max_ms.map_or("–".into(), |v| v.to_string()),
        s.packets_skipped,
        s.send_errors
    );
    for note in &s.notes {
        let _ = writeln!(out, "NOTE          {note}");
    }
    println!("{out}");
}

/// The header of the results table.
const HEADER: &str = "| N | server | connected | round trip p50 / p90 / p99 (ms) | drift: first → last 10 s¹ (slope) | server CPU, % of a core (per session) | server RSS, MiB (per session) | loadgen CPU, % of a core | notes |\n|---|---|---|---|---|---|---|---|---|\n";

fn row(label: &str, s: &StepResult) -> String {
    let rtt = s.rtt.as_ref().map_or_else(
        || "no echo".to_string(),
        |r| format!("{:.1} / {:.1} / {:.1}", r.p50_ms, r.p90_ms, r.p99_ms),
    );
    let drift = s.rtt.as_ref().map_or_else(
        || "–".to_string(),
        |r| {
            format!(
                "{} → {} ms ({} ms/min)",
                opt(r.first_ms, 1),
                opt(r.last_ms, 1),
                signed(r.slope_ms_per_min, 1)
            )
        },
    );
    let (cpu, rss) = s.server.as_ref().map_or_else(
        || ("–".to_string(), "–".to_string()),
        |p| {
            (
                format!("{:.1} ({})", p.cpu_pct, opt(p.cpu_pct_per_session, 3)),
                format!("{:.1} ({})", p.rss_mib, opt(p.rss_mib_per_session, 3)),
            )
        },
    );
    format!(
        "| {} | {label} | {}/{} | {rtt} | {drift} | {cpu} | {rss} | {:.1} | {} |\n",
        s.sessions_requested,
        s.sessions_connected,
        s.sessions_requested,
        s.loadgen.cpu_pct,
        s.notes.join("; ").replace('|', "/")
    )
}

/// The goals of the issue checked against a run's 200-session step, if it has one.
fn goals(report: &Report) -> Option<String> {
    let s = report
        .steps
        .iter()
        .find(|s| s.sessions_requested == GOAL_SESSIONS)?;
    let mark = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    };
    let rtt = s.rtt.as_ref();
    let server = s.server.as_ref();
    let mut out = format!(
        "Goals for {} at {GOAL_SESSIONS} sessions:\n\n| goal | measured | |\n|---|---|---|\n",
        report.label
    );
    let lines = [
        (
            format!("{GOAL_SESSIONS} sessions connected"),
            format!("{}", s.sessions_connected),
            Some(s.sessions_connected >= GOAL_SESSIONS),
        ),
        (
            format!("round trip p90 < {GOAL_P90_MS} ms"),
            opt(rtt.map(|r| r.p90_ms), 1),
            rtt.map(|r| r.p90_ms < GOAL_P90_MS),
        ),
        (
            format!("no upward drift (last − first 10 s < {GOAL_DRIFT_MS} ms)"),
            signed(rtt.and_then(|r| r.drift_ms), 1),
            rtt.and_then(|r| r.drift_ms).map(|d| d < GOAL_DRIFT_MS),
        ),
        (
            format!("< {GOAL_CPU_PCT_PER_SESSION}% of a core per session"),
            opt(server.and_then(|p| p.cpu_pct_per_session), 3),
            server
                .and_then(|p| p.cpu_pct_per_session)
                .map(|c| c < GOAL_CPU_PCT_PER_SESSION),
        ),
        (
            format!("< {GOAL_RSS_MIB_PER_SESSION} MiB per session"),
            opt(server.and_then(|p| p.rss_mib_per_session), 3),
            server
                .and_then(|p| p.rss_mib_per_session)
                .map(|m| m < GOAL_RSS_MIB_PER_SESSION),
        ),
    ];
    for (goal, measured, ok) in lines {
        let _ = writeln!(out, "| {goal} | {measured} | {} |", mark(ok));
    }
    Some(out)
}

/// The header of the video results table.
const VIDEO_HEADER: &str = "| N | server | connected | frames back per s per session (fewest) | video round trip p50 / p90 / p99 (ms) | server CPU, % of a core (per session) | server RSS, MiB (per session) | loadgen CPU, % of a core | notes |\n|---|---|---|---|---|---|---|---|---|\n";

fn video_row(label: &str, s: &StepResult) -> String {
    let v = s.video.as_ref();
    let fps = v.map_or_else(
        || "–".to_string(),
        |v| {
            format!(
                "{} ({})",
                opt(v.fps_received_per_session, 1),
                opt(v.fps_received_min, 1)
            )
        },
    );
    let rtt = v.and_then(|v| v.rtt.as_ref()).map_or_else(
        || "no echo".to_string(),
        |r| format!("{:.1} / {:.1} / {:.1}", r.p50_ms, r.p90_ms, r.p99_ms),
    );
    let (cpu, rss) = s.server.as_ref().map_or_else(
        || ("–".to_string(), "–".to_string()),
        |p| {
            (
                format!("{:.1} ({})", p.cpu_pct, opt(p.cpu_pct_per_session, 1)),
                format!("{:.1} ({})", p.rss_mib, opt(p.rss_mib_per_session, 2)),
            )
        },
    );
    format!(
        "| {} | {label} | {}/{} | {fps} | {rtt} | {cpu} | {rss} | {:.1} | {} |\n",
        s.sessions_requested,
        s.sessions_connected,
        s.sessions_requested,
        s.loadgen.cpu_pct,
        s.notes.join("; ").replace('|', "/")
    )
}

/// The video goals checked at every N of a video run.
fn video_goals(report: &Report) -> Option<String> {
    report.video.as_ref()?;
    let mark = |ok: Option<bool>| match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    };
    let mut out = format!(
        "Goals for {} (per camera echo session: < {GOAL_VIDEO_CPU_PCT_PER_SESSION}% of a core, video round trip p90 < {GOAL_VIDEO_P90_MS} ms):\n\n| N | server CPU per session | | video p90 | |\n|---|---|---|---|---|\n",
        report.label
    );
    for s in &report.steps {
        let cpu = s.server.as_ref().and_then(|p| p.cpu_pct_per_session);
        let p90 = s
            .video
            .as_ref()
            .and_then(|v| v.rtt.as_ref())
            .map(|r| r.p90_ms);
        let _ = writeln!(
            out,
            "| {} | {} % | {} | {} ms | {} |",
            s.sessions_requested,
            opt(cpu, 1),
            mark(cpu.map(|c| c < GOAL_VIDEO_CPU_PCT_PER_SESSION)),
            opt(p90, 1),
            mark(p90.map(|p| p < GOAL_VIDEO_P90_MS))
        );
    }
    Some(out)
}

/// One markdown document comparing runs: a row per (N, run), runs side by side for each N.
/// Video runs get the video table and goals.
pub fn markdown(reports: &[Report]) -> String {
    let video = reports.iter().any(|r| r.video.is_some());
    let mut out = String::new();
    if let Some(first) = reports.first() {
        let m = &first.machine;
        let _ = writeln!(
            out,
            "Machine: {} CPUs ({}), {} MiB, Linux {}; {} % busy with other work just before the first run. Each step: sessions ramped at {}/s, then a {:.0} s window; Opus {} kb/s, round trip timed on {} sessions per step.\n",
            m.cpus,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel,
            opt(first.background_busy_pct, 0),
            first.ramp_per_sec,
            first.duration_secs,
            first.opus_bitrate / 1000,
            first.measure
        );
    }
    if let Some(v) = reports.iter().find_map(|r| r.video.as_ref()) {
        let _ = writeln!(
            out,
            "Camera: VP8 {}×{} at {} fps, a {}-frame loop starting with a keyframe ({:.0} kbit/s, noise ±{}), audio {}; video round trip timed on {} sessions per step.\n",
            v.width,
            v.height,
            v.fps,
            v.loop_frames,
            v.loop_kbps,
            v.noise,
            if v.audio { "sent too" } else { "not sent" },
            v.measure
        );
    }
    out.push_str(if video { VIDEO_HEADER } else { HEADER });
    let ns: BTreeSet<usize> = reports
        .iter()
        .flat_map(|r| r.steps.iter().map(|s| s.sessions_requested))
        .collect();
    for n in ns {
        for report in reports {
            for step in report.steps.iter().filter(|s| s.sessions_requested == n) {
                if video {
                    out.push_str(&video_row(&report.label, step));
                } else {
                    out.push_str(&row(&report.label, step));
                }
            }
        }
    }
    if !video {
        out.push_str(
            "\n¹ Medians of the first and last 10 s of the window (of its first and last third when it is shorter than 30 s).\n",
        );
    }
    for report in reports {
        let g = if video {
            video_goals(report)
        } else {
            goals(report)
        };
        if let Some(g) = g {
            out.push('\n');
            out.push_str(&g);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::ProcFigures;
    use crate::stats::RttStats;

    fn step(n: usize, p90: f64) -> StepResult {
        StepResult {
            sessions_requested: n,
            sessions_connected: n,
            rtt: RttStats::from_samples(&[(1.0, p90), (50.0, p90)], 60.0),
            server: Some(ProcFigures {
                cpu_pct: 40.0,
                cpu_pct_per_session: Some(0.2),
                rss_mib: 100.0,
                rss_mib_per_session: Some(0.4),
                ..ProcFigures::default()
            }),
            ..StepResult::default()
        }
    }

    #[test]
    fn side_by_side_rows_and_goals() {
        let rust = Report {
            label: "rust".into(),
            steps: vec![step(1, 20.0), step(200, 30.0)],
            ..Report::default()
        };
        let python = Report {
            label: "python".into(),
            steps: vec![step(1, 250.0)],
            ..Report::default()
        };
        let md = markdown(&[rust, python]);
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1 ")).collect();
        assert_eq!(rows.len(), 2, "{md}");
        assert!(rows[0].contains("| rust |") && rows[1].contains("| python |"));
        assert!(md.contains("Goals for rust at 200 sessions"));
        assert!(!md.contains("Goals for python"));
        assert!(!md.contains("missed"), "{md}");
    }

    #[test]
    fn video_runs_get_the_video_table_and_goals() {
        use crate::run::{VideoSettings, VideoStep};
        let mut fast = step(1, 20.0);
        fast.video = Some(VideoStep {
            fps_received_per_session: Some(29.8),
            fps_received_min: Some(29.5),
            rtt: RttStats::from_samples(&[(1.0, 60.0), (2.0, 70.0)], 10.0),
            ..VideoStep::default()
        });
        let mut slow = step(8, 20.0);
        slow.video = Some(VideoStep {
            rtt: RttStats::from_samples(&[(1.0, 300.0)], 10.0),
            ..VideoStep::default()
        });
        if let Some(p) = &mut slow.server {
            p.cpu_pct_per_session = Some(12.5);
        }
        let report = Report {
            label: "rust".into(),
            video: Some(VideoSettings {
                width: 640,
                height: 480,
                fps: 30,
                ..VideoSettings::default()
            }),
            steps: vec![fast, slow],
            ..Report::default()
        };
        let md = markdown(&[report]);
        assert!(md.contains("frames back per s"), "{md}");
        assert!(md.contains("| 1 | rust | 1/1 | 29.8 (29.5) |"), "{md}");
        assert!(md.contains("| 1 | 0.2 % | met | 69.0 ms | met |"), "{md}");
        assert!(
            md.contains("| 8 | 12.5 % | **missed** | 300.0 ms | **missed** |"),
            "{md}"
        );
    }
}
