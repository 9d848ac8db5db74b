//! Findings (every case whose outcome is not `Ok`), grouped by where they happen,
//! and run statistics: cases per second, how far cases get, slow cases.

use super::driver::{CaseResult, Outcome};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Finding {
    pub seed: u64,
    pub subject: String,
    /// `panic`, `abort`, `hang` or `violation`.
    pub kind: &'static str,
    pub stage: String,
    pub message: String,
    /// `file:line:col` of a panic (with the library frame when the panic is
    /// located in std or a dependency).
    pub location: String,
    pub mutations: Vec<String>,
}

impl Finding {
    pub fn of(result: &CaseResult) -> Option<Finding> {
        let (kind, stage, message, location) = match &result.outcome {
            Outcome::Ok => return None,
            Outcome::Panic {
                stage,
                message,
                location,
                frame,
            } => (
                "panic",
                stage,
                message.clone(),
                match frame {
                    Some(frame) => format!("{location} (from {frame})"),
                    None => location.clone(),
                },
            ),
            Outcome::Abort {
                stage,
                message,
                frame,
            } => (
                "abort",
                stage,
                message.clone(),
                frame
                    .as_ref()
                    .map(|f| format!("(from {f})"))
                    .unwrap_or_default(),
            ),
            Outcome::Hang { stage, seconds } => (
                "hang",
                stage,
                format!("still running after {seconds:.0} s"),
                String::new(),
            ),
            Outcome::Violation { stage, message } => {
                ("violation", stage, message.clone(), String::new())
            }
        };
        Some(Finding {
            seed: result.seed,
            subject: result.subject.clone(),
            kind,
            stage: stage.clone(),
            message,
            location,
            mutations: result.mutations.clone(),
        })
    }

    /// What makes two findings the same bug: where in the library it happens
    /// (a panic's location; for a panic inside std or a dependency, and for an
    /// abort, the innermost library frame), else the kind, stage and message shape.
    pub fn key(&self) -> String {
        let frame = self
            .location
            .split_once("(from ")
            .map(|(_, f)| f.trim_end_matches(')'))
            .map(|f| f.split_once(" at ").map_or(f, |(_, at)| at));
        match (self.kind, frame) {
            (_, Some(at)) => format!("in {at}"),
            ("panic", None) => format!("at {}", self.location),
            _ => format!("{} {} {}", self.kind, self.stage, shape(&self.message)),
        }
    }

    /// One line: seed, subject, stage, message, location.
    pub fn line(&self) -> String {
        let mut line = format!(
            "seed {} [{}] {} in {}: {}",
            self.seed,
            self.subject,
            self.kind,
            self.stage,
            first_line(&self.message)
        );
        if self.location.starts_with('(') {
            let _ = write!(line, " {}", self.location);
        } else if !self.location.is_empty() {
            let _ = write!(line, " at {}", self.location);
        }
        line
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 300 {
        format!("{}...", line.chars().take(300).collect::<String>())
    } else {
        line.to_string()
    }
}

/// A message with numbers and quoted names blanked, so that one bug hit with
/// different sizes or tensors groups together.
fn shape(message: &str) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    for c in first_line(message).chars().take(120) {
        match c {
            '\'' => {
                in_quote = !in_quote;
                out.push(c);
            }
            _ if in_quote => {}
            '0'..='9' => {
                if !out.ends_with('N') {
                    out.push('N')
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Not a finding, but worth a look: ONNX Runtime accepted the input and
/// rejected what the library made of it, or an error calls itself a bug.
#[derive(Debug, Clone)]
pub struct Note {
    pub seed: u64,
    pub subject: String,
    pub what: &'static str,
    pub stage: String,
    pub message: String,
}

impl Note {
    fn of(result: &CaseResult) -> Vec<Note> {
        let mut notes = Vec::new();
        let ok = |stage: &str| {
            result
                .stages
                .iter()
                .any(|s| s.stage == stage && s.error.is_none())
        };
        let mut note = |what, stage: &str, message: &str| {
            notes.push(Note {
                seed: result.seed,
                subject: result.subject.clone(),
                what,
                stage: stage.to_string(),
                message: message.to_string(),
            })
        };
        if ok("ort.input") {
            for stage in ["ort.patched", "ort.step"] {
                if let Some(e) = result.error_of(stage) {
                    note(
                        "ONNX Runtime accepts the input but not the output",
                        stage,
                        e,
                    );
                }
            }
        }
        for s in &result.stages {
            if let Some(e) = &s.error {
                if e.contains("(a bug)") {
                    note("an error on bad input calls itself a bug", &s.stage, e);
                }
            }
        }
        notes
    }

    fn key(&self) -> String {
        // Self-described bugs group by what the library checked, not by node.
        let message = match self.message.find("(a bug)") {
            Some(at) => &self.message[..at],
            None => &self.message,
        };
        format!("{} | {} | {}", self.what, self.stage, shape(message))
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub notes: Vec<Note>,
    pub cases: u64,
    pub elapsed: Duration,
    pub findings: Vec<Finding>,
    /// Stage -> (Ok count, Err count).
    pub stages: BTreeMap<String, (u64, u64)>,
    /// Subject -> cases.
    pub subjects: BTreeMap<String, u64>,
    /// Cases slower than `slow_ms`: (millis, seed, subject).
    pub slow: Vec<(u64, u64, String)>,
    pub slow_ms: u64,
    pub total_case_ms: u64,
}

impl Report {
    pub fn new(slow: Duration) -> Report {
        Report {
            slow_ms: slow.as_millis() as u64,
            ..Default::default()
        }
    }

    pub fn add(&mut self, result: &CaseResult) {
        self.cases += 1;
        self.total_case_ms += result.millis;
        *self.subjects.entry(result.subject.clone()).or_default() += 1;
        for stage in &result.stages {
            let entry = self.stages.entry(stage.stage.clone()).or_default();
            if stage.error.is_none() {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        if result.millis >= self.slow_ms && !matches!(result.outcome, Outcome::Hang { .. }) {
            self.slow
                .push((result.millis, result.seed, result.subject.clone()));
        }
        if let Some(finding) = Finding::of(result) {
            self.findings.push(finding);
        }
        self.notes.extend(Note::of(result));
    }

    /// Findings grouped by [`Finding::key`], in order of first seed.
    pub fn groups(&self) -> Vec<(String, Vec<&Finding>)> {
        let mut groups: BTreeMap<String, Vec<&Finding>> = BTreeMap::new();
        for f in &self.findings {
            groups.entry(f.key()).or_default().push(f);
        }
        let mut groups: Vec<(String, Vec<&Finding>)> = groups.into_iter().collect();
        for (_, list) in &mut groups {
            list.sort_by_key(|f| f.seed);
        }
        groups.sort_by_key(|(_, list)| list[0].seed);
        groups
    }

    pub fn cases_per_second(&self) -> f64 {
        self.cases as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The run summary: rate, subjects, how far cases got, slow cases.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} cases in {:.1} s: {:.1} cases/s (mean {:.0} ms per case)",
            self.cases,
            self.elapsed.as_secs_f64(),
            self.cases_per_second(),
            self.total_case_ms as f64 / self.cases.max(1) as f64
        );
        let subjects: Vec<String> = self
            .subjects
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        let _ = writeln!(out, "subjects: {}", subjects.join(", "));
        let _ = writeln!(out, "stages (ok / err):");
        for (stage, (ok, err)) in &self.stages {
            let _ = writeln!(out, "  {stage:<20} {ok:>7} / {err:<7}");
        }
        if !self.slow.is_empty() {
            let mut slow = self.slow.clone();
            slow.sort_by(|a, b| b.cmp(a));
            let _ = writeln!(
                out,
                "{} slow cases (>= {} ms), slowest: {}",
                slow.len(),
                self.slow_ms,
                slow.iter()
                    .take(8)
                    .map(|(ms, seed, subject)| format!("seed {seed} [{subject}] {ms} ms"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        out
    }

    /// Notes grouped by kind, stage and message shape, with their first seed.
    pub fn notes_text(&self) -> String {
        let mut groups: BTreeMap<String, Vec<&Note>> = BTreeMap::new();
        for n in &self.notes {
            groups.entry(n.key()).or_default().push(n);
        }
        let mut out = String::new();
        if groups.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "{} notes (not findings) in {} groups:",
            self.notes.len(),
            groups.len()
        );
        let mut by_what: BTreeMap<&str, Vec<(&String, &Vec<&Note>)>> = BTreeMap::new();
        for (key, list) in &groups {
            by_what.entry(list[0].what).or_default().push((key, list));
        }
        for (what, list) in by_what {
            let _ = writeln!(out, "- {what}: {} groups", list.len());
            for (_, notes) in list.iter().take(12) {
                let n = notes[0];
                let _ = writeln!(
                    out,
                    "    seed {} [{}] {} ({}x): {}",
                    n.seed,
                    n.subject,
                    n.stage,
                    notes.len(),
                    first_line(&n.message).chars().take(200).collect::<String>()
                );
                if notes.len() > 1 {
                    let seeds: Vec<String> = notes
                        .iter()
                        .skip(1)
                        .take(8)
                        .map(|n| n.seed.to_string())
                        .collect();
                    let _ = writeln!(out, "      also seeds {}", seeds.join(" "));
                }
            }
        }
        out
    }

    /// One line per finding (seed, subject, stage, message, location), by seed.
    pub fn all_findings_text(&self) -> String {
        let mut findings: Vec<&Finding> = self.findings.iter().collect();
        findings.sort_by_key(|f| f.seed);
        let mut out = String::new();
        for f in findings.iter().take(500) {
            let _ = writeln!(out, "{}", f.line());
        }
        if findings.len() > 500 {
            let _ = writeln!(out, "... and {} more", findings.len() - 500);
        }
        out
    }

    /// Every distinct finding: its first seed in full, the other seeds listed.
    pub fn findings_text(&self) -> String {
        let mut out = String::new();
        let groups = self.groups();
        let _ = writeln!(
            out,
            "{} findings in {} distinct places",
            self.findings.len(),
            groups.len()
        );
        for (key, list) in groups {
            let first = list[0];
            let _ = writeln!(out, "- {key}");
            let _ = writeln!(out, "    {}", first.line());
            if !first.mutations.is_empty() {
                let _ = writeln!(out, "    mutations: {}", first.mutations.join("; "));
            }
            if list.len() > 1 {
                let seeds: Vec<String> = list
                    .iter()
                    .skip(1)
                    .take(20)
                    .map(|f| {
                        if f.kind == first.kind {
                            f.seed.to_string()
                        } else {
                            format!("{} ({})", f.seed, f.kind)
                        }
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "    {} more seeds: {}{}",
                    list.len() - 1,
                    seeds.join(" "),
                    if list.len() > 21 { " ..." } else { "" }
                );
            }
        }
        out
    }
}
