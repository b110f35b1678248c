//! Results: each figure next to its same-run baseline, as a ratio.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) name: String,
    /// What was measured, what it is compared with, and their ratio.
    pub(crate) value: f64,
    pub(crate) baseline: Option<f64>,
    pub(crate) ratio: Option<f64>,
    /// The target, e.g. ">= 0.60x" or "<= 20 ms".
    pub(crate) target: String,
    pub(crate) pass: bool,
    pub(crate) unit: String,
    /// Why the check could not be judged (a failed or incomplete baseline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) problem: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Scenario {
    pub(crate) name: String,
    pub(crate) figures: BTreeMap<String, f64>,
    pub(crate) checks: Vec<Check>,
    pub(crate) notes: Vec<String>,
}

impl Scenario {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    pub(crate) fn figure(&mut self, k: &str, v: f64) {
        self.figures.insert(k.into(), v);
    }

    /// `value / baseline >= min_ratio`. A baseline that did not measure
    /// (zero, NaN, infinite) fails the check instead of passing a ratio of
    /// infinity; so does a measurement that is not a finite number.
    pub(crate) fn ratio(
        &mut self,
        name: &str,
        value: f64,
        baseline: f64,
        min_ratio: f64,
        unit: &str,
    ) {
        let usable = |v: f64| v.is_finite() && v > 0.0;
        let ratio = (usable(baseline) && value.is_finite()).then(|| value / baseline);
        let problem = if !usable(baseline) {
            Some(format!("the baseline measured {baseline}: no ratio"))
        } else if !value.is_finite() {
            Some(format!("the measurement is {value}: no ratio"))
        } else {
            None
        };
        self.checks.push(Check {
            name: name.into(),
            value,
            baseline: Some(baseline),
            ratio,
            target: format!(">= {min_ratio:.2}x"),
            pass: ratio.is_some_and(|r| r.is_finite() && r >= min_ratio),
            unit: unit.into(),
            problem,
        });
    }

    /// `value / baseline <= max_ratio` (for costs: memory, latency). A
    /// baseline or measurement that is not a positive finite number fails.
    pub(crate) fn ratio_at_most(
        &mut self,
        name: &str,
        value: f64,
        baseline: f64,
        max_ratio: f64,
        unit: &str,
    ) {
        self.ratio(name, value, baseline, 0.0, unit);
        if let Some(c) = self.checks.last_mut() {
            c.target = format!("<= {max_ratio:.2}x");
            c.pass = c.ratio.is_some_and(|r| r.is_finite() && r <= max_ratio);
        }
    }

    /// A ratio reported without a target (it still fails if the baseline
    /// did not measure).
    pub(crate) fn ratio_reported(&mut self, name: &str, value: f64, baseline: f64, unit: &str) {
        self.ratio(name, value, baseline, 0.0, unit);
        if let Some(c) = self.checks.last_mut() {
            c.target = "none (reported)".into();
        }
    }

    /// A ratio check whose baseline did not complete (`why`): it fails, and
    /// the partial baseline is not used to compute a ratio.
    pub(crate) fn ratio_incomplete(
        &mut self,
        name: &str,
        value: f64,
        min_ratio: f64,
        unit: &str,
        why: &str,
    ) {
        self.checks.push(Check {
            name: name.into(),
            value,
            baseline: None,
            ratio: None,
            target: format!(">= {min_ratio:.2}x"),
            pass: false,
            unit: unit.into(),
            problem: Some(format!("baseline incomplete: {why}")),
        });
    }

    /// The scenario could not run to the end (`why`): one failed check.
    pub(crate) fn failed(&mut self, why: &str) {
        self.checks.push(Check {
            name: "the scenario ran to the end".into(),
            value: f64::NAN,
            baseline: None,
            ratio: None,
            target: "completes".into(),
            pass: false,
            unit: String::new(),
            problem: Some(format!("failed: {why}")),
        });
    }

    /// `value <= max` (or `>=` when `at_least`).
    pub(crate) fn bound(&mut self, name: &str, value: f64, limit: f64, at_least: bool, unit: &str) {
        self.checks.push(Check {
            name: name.into(),
            value,
            baseline: None,
            ratio: None,
            target: format!("{} {limit} {unit}", if at_least { ">=" } else { "<=" }),
            // NaN compares false both ways: an unmeasured value fails.
            pass: if at_least {
                value >= limit
            } else {
                value <= limit
            },
            unit: unit.into(),
            problem: value.is_nan().then(|| "not measured".to_owned()),
        });
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub(crate) fn markdown(scenarios: &[Scenario], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(
        out,
        "| scenario | check | measured | baseline | ratio | target | |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    for s in scenarios {
        for c in &s.checks {
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {} | {} | {} | {} |",
                s.name,
                c.name,
                num(c.value),
                c.unit,
                match (&c.problem, c.baseline) {
                    (Some(p), _) => p.clone(),
                    (None, Some(b)) => format!("{} {}", num(b), c.unit),
                    (None, None) => "—".into(),
                },
                c.ratio.map_or("—".into(), |r| format!("{r:.2}x")),
                c.target,
                if c.pass { "✅" } else { "❌" }
            );
        }
    }
    for s in scenarios
        .iter()
        .filter(|s| !s.figures.is_empty() || !s.notes.is_empty())
    {
        let _ = writeln!(
            out,
            "\n**{}**: {}",
            s.name,
            s.figures
                .iter()
                .map(|(k, v)| format!("{k} {}", num(*v)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for n in &s.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}
