//! Small statistics over rounds, and the report a run prints: one markdown
//! section per harness section, then one line per target.

use std::fmt::Write as _;
use std::time::Duration;

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The median of a series (the upper one of an even count).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `min–max` of a series, for how much the rounds disagreed.
pub(crate) fn spread(v: &[f64], digits: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.digits$}–{max:.digits$}")
}

/// `values[i] / base[i]`: the per-round ratios of two rows measured side by side.
pub(crate) fn ratios(values: &[f64], base: &[f64]) -> Vec<f64> {
    values.iter().zip(base).map(|(v, b)| v / b).collect()
}

/// `median (min–max)` of a series with `digits` decimals.
pub(crate) fn value(v: &[f64], digits: usize) -> String {
    format!("{:.digits$} ({})", median(v), spread(v, digits))
}

/// The median of the per-round ratios `values / base`.
pub(crate) fn ratio(values: &[f64], base: &[f64]) -> f64 {
    median(&ratios(values, base))
}

/// `median (min–max)` of the per-round ratios `values / base`.
pub(crate) fn ratio_text(values: &[f64], base: &[f64]) -> String {
    let r = ratios(values, base);
    format!("{:.3} ({})", median(&r), spread(&r, 2))
}

/// Writes the head of a markdown table: `head` (`| a | b |`) and the line
/// under it.
pub(crate) fn table_head(out: &mut String, head: &str) {
    let columns = head.matches('|').count().saturating_sub(1);
    let _ = writeln!(out, "{head}\n|{}", "---|".repeat(columns));
}

/// A duration in milliseconds.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in microseconds.
pub(crate) fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One line of the summary: a target and whether this run met it.
pub(crate) struct Target {
    what: String,
    measured: String,
    goal: String,
    holds: bool,
}

impl Target {
    /// A target with its measured value and goal already written out.
    pub(crate) fn new(what: impl Into<String>, measured: String, goal: &str, holds: bool) -> Self {
        Self {
            what: what.into(),
            measured,
            goal: goal.to_owned(),
            holds,
        }
    }

    /// A ratio against an upper bound: holds when `measured ≤ goal`.
    pub(crate) fn at_most(what: impl Into<String>, measured: f64, goal: f64) -> Self {
        Self::new(
            what,
            format!("{measured:.3}"),
            &format!("≤ {goal}"),
            measured <= goal,
        )
    }

    /// A ratio against a lower bound: holds when `measured ≥ goal`.
    pub(crate) fn at_least(what: impl Into<String>, measured: f64, goal: f64) -> Self {
        Self::new(
            what,
            format!("{measured:.3}"),
            &format!("≥ {goal}"),
            measured >= goal,
        )
    }

    /// A target that this run could not measure (`why`): a miss.
    pub(crate) fn unmeasured(what: impl Into<String>, goal: &str, why: &str) -> Self {
        Self::new(what, format!("not measured: {why}"), goal, false)
    }
}

/// What a run has to print: the sections' tables and the targets.
#[derive(Default)]
pub(crate) struct Report {
    sections: Vec<String>,
    targets: Vec<Target>,
}

impl Report {
    /// Adds a section's text (markdown), printed in the order added.
    pub(crate) fn section(&mut self, text: String) {
        self.sections.push(text);
    }

    /// Adds a target line.
    pub(crate) fn target(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// Whether no section produced anything.
    pub(crate) fn is_empty(&self) -> bool {
        self.sections.is_empty()
    }

    /// Prints every section, then the targets as a table and as one plain
    /// line each (`target: value (goal) pass|miss`).
    pub(crate) fn print(&self) {
        for section in &self.sections {
            println!("{section}");
        }
        println!("## Targets\n");
        println!("| target | measured | goal | holds |");
        println!("|---|---|---|---|");
        for t in &self.targets {
            println!(
                "| {} | {} | {} | {} |",
                t.what,
                t.measured,
                t.goal,
                if t.holds { "yes" } else { "**no**" }
            );
        }
        println!();
        for t in &self.targets {
            println!(
                "target {}: {} (goal {}) {}",
                t.what,
                t.measured,
                t.goal,
                if t.holds { "pass" } else { "MISS" }
            );
        }
    }
}
