//! libiscsi's conformance suite, `iscsi-test-cu`: running it and reading its verdicts.
//!
//! The Debian build (libiscsi 1.19) reports through CUnit. Its XML mode (`-x`) writes
//! `CUnitAutomated-Results.xml` into the working directory but records skipped tests as
//! successes, so we parse the default verbose text mode instead, which prints per test:
//!
//! ```text
//! Suite: GetLBAStatus
//!   Test: Simple ...passed
//!   Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed ...
//! FAILED
//!     1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
//!   Test: UnmapSingle ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
//! passed
//! ```
//!
//! A test is a *skip* when CUnit says `passed` but the test printed `[SKIPPED]` before its
//! verdict (libiscsi skips by returning early). Output a test prints after its verdict
//! (teardown, CUnit's numbered assertion list) is attached to it as messages. The CUnit
//! "Run Summary" is cross-checked against the parsed verdicts so a garbled or truncated run
//! can never be read as a clean one; tests that `iscsi-test-cu -l` lists but that got no
//! verdict count as failures.

use crate::process::{self, Output};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Messages kept per test (libiscsi can print thousands of assertion lines for one test).
const MAX_MESSAGES: usize = 12;

/// Verdict of one test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// Ran and passed.
    Pass,
    /// Returned early with `[SKIPPED]` (feature absent, or the test does not apply).
    Skip,
    /// CUnit reported a failed assertion, or the test got no verdict.
    Fail,
}

impl Outcome {
    /// Word used in baseline files.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Skip => "SKIP",
            Outcome::Fail => "FAIL",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "PASS" => Some(Outcome::Pass),
            "SKIP" => Some(Outcome::Skip),
            "FAIL" => Some(Outcome::Fail),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One test's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestResult {
    /// Full name, `FAMILY.Suite.Test` (e.g. `ALL.Read10.BeyondEol`).
    pub name: String,
    /// Verdict.
    pub outcome: Outcome,
    /// Distinct lines the test printed (`[SKIPPED] ...`, `[FAILED] ...`, CUnit assertion
    /// lines), in order, capped.
    pub messages: Vec<String>,
}

impl TestResult {
    /// Suite part of the name (`ALL.Read10`).
    pub fn suite(&self) -> &str {
        self.name.rsplit_once('.').map_or(&self.name, |(s, _)| s)
    }
}

/// Pass/skip/fail counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Passed tests.
    pub pass: usize,
    /// Skipped tests.
    pub skip: usize,
    /// Failed tests.
    pub fail: usize,
}

impl Counts {
    fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Pass => self.pass += 1,
            Outcome::Skip => self.skip += 1,
            Outcome::Fail => self.fail += 1,
        }
    }

    /// Total tests.
    pub fn total(&self) -> usize {
        self.pass + self.skip + self.fail
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pass {} skip {} fail {} (of {})",
            self.pass,
            self.skip,
            self.fail,
            self.total()
        )
    }
}

/// CUnit's own "tests" summary row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CunitSummary {
    /// Tests CUnit ran.
    pub ran: usize,
    /// Tests CUnit counted as passed (includes libiscsi skips).
    pub passed: usize,
    /// Tests CUnit counted as failed.
    pub failed: usize,
}

/// Parsed results of one `iscsi-test-cu` run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Results in run order.
    pub results: Vec<TestResult>,
    /// CUnit's summary, when the run got that far.
    pub summary: Option<CunitSummary>,
}

impl Report {
    /// Parses verbose-mode output. `family` is the test family the run selected (`ALL`),
    /// which CUnit does not print but which [`list_tests`] names include.
    pub fn parse(output: &str, family: &str) -> Result<Self> {
        let mut report = Report::default();
        let mut suite = String::new();
        // Index of the test still waiting for its verdict, and whether it printed [SKIPPED].
        let mut pending: Option<(usize, bool)> = None;
        let mut lines = output.lines();
        while let Some(raw) = lines.next() {
            let line = raw.trim_end_matches('\r');
            if line.starts_with("Run Summary:") {
                report.summary = parse_summary(&mut lines);
                break;
            }
            if let Some(name) = line.strip_prefix("Suite: ") {
                suite = name.trim().to_string();
                continue;
            }
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("Test: ") {
                if let Some((name, after)) = rest.split_once(" ...") {
                    if let Some((idx, _)) = pending.take() {
                        report.results[idx]
                            .messages
                            .push("no verdict before the next test started".into());
                    }
                    report.results.push(TestResult {
                        name: format!("{family}.{suite}.{}", name.trim()),
                        outcome: Outcome::Fail,
                        messages: Vec::new(),
                    });
                    pending = Some((report.results.len() - 1, false));
                    fragment(&mut report, &mut pending, after);
                    continue;
                }
            }
            fragment(&mut report, &mut pending, line);
        }
        if let Some((idx, _)) = pending {
            report.results[idx]
                .messages
                .push("no verdict: iscsi-test-cu output ended inside this test".into());
        }
        report.check_summary()?;
        Ok(report)
    }

    /// Parses output that was cut short (no summary cross-check possible).
    pub fn parse_partial(output: &str, family: &str) -> Self {
        let text = match output.find("Run Summary:") {
            Some(i) => &output[..i],
            None => output,
        };
        // Without a "Run Summary" section, parse() skips the cross-check and cannot fail.
        Self::parse(text, family).unwrap_or_default()
    }

    fn check_summary(&self) -> Result<()> {
        let Some(s) = self.summary else {
            return Ok(());
        };
        let verdicts = self.results.iter().filter(|r| !r.has_no_verdict()).count();
        let failed = self
            .results
            .iter()
            .filter(|r| r.outcome == Outcome::Fail && !r.has_no_verdict())
            .count();
        if s.ran != verdicts || s.failed != failed || s.passed + s.failed != s.ran {
            bail!(
                "iscsi-test-cu summary (ran {}, passed {}, failed {}) disagrees with the {} \
                 verdicts parsed ({} failed): output garbled or parser out of date",
                s.ran,
                s.passed,
                s.failed,
                verdicts,
                failed
            );
        }
        Ok(())
    }

    /// Adds a failed result for every expected test the run did not report (crash, abort).
    pub fn add_missing(&mut self, expected: &[String]) {
        let seen: BTreeSet<&str> = self.results.iter().map(|r| r.name.as_str()).collect();
        let missing: Vec<String> = expected
            .iter()
            .filter(|n| !seen.contains(n.as_str()))
            .cloned()
            .collect();
        for name in missing {
            self.results.push(TestResult {
                name,
                outcome: Outcome::Fail,
                messages: vec!["not run: iscsi-test-cu never reported this test".into()],
            });
        }
    }

    /// Totals.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.results {
            c.add(r.outcome);
        }
        c
    }

    /// Totals per suite (`ALL.Read10` → counts).
    pub fn suite_counts(&self) -> BTreeMap<String, Counts> {
        let mut m: BTreeMap<String, Counts> = BTreeMap::new();
        for r in &self.results {
            m.entry(r.suite().to_string()).or_default().add(r.outcome);
        }
        m
    }

    /// Results with the given outcome.
    pub fn with_outcome(&self, o: Outcome) -> impl Iterator<Item = &TestResult> {
        self.results.iter().filter(move |r| r.outcome == o)
    }

    /// `name → outcome`.
    pub fn outcomes(&self) -> BTreeMap<String, Outcome> {
        self.results
            .iter()
            .map(|r| (r.name.clone(), r.outcome))
            .collect()
    }

    /// Renders the per-test results file format (see [`parse_results_file`]): a commented
    /// header, then `OUTCOME NAME` lines, a failure's first message as a trailing comment.
    pub fn to_results_file(&self, header: &str) -> String {
        let mut s = String::new();
        for line in header.lines() {
            s.push_str("# ");
            s.push_str(line);
            s.push('\n');
        }
        s.push_str(&format!("# totals: {}\n", self.counts()));
        for r in &self.results {
            s.push_str(&format!("{} {}", r.outcome, r.name));
            let note = match r.outcome {
                Outcome::Pass => None,
                Outcome::Skip => r.messages.iter().find(|m| m.contains("[SKIPPED]")),
                Outcome::Fail => r
                    .messages
                    .iter()
                    .find(|m| m.contains("[FAILED]"))
                    .or(r.messages.first()),
            };
            if let Some(note) = note {
                s.push_str("  # ");
                s.push_str(note.trim());
            }
            s.push('\n');
        }
        s
    }
}

impl TestResult {
    /// Whether the test never got a verdict (run cut short or never started).
    pub fn has_no_verdict(&self) -> bool {
        self.messages
            .iter()
            .any(|m| m.starts_with("no verdict") || m.starts_with("not run"))
    }
}

/// Feeds one line (or the remainder of a `Test:` line) to the parser.
fn fragment(report: &mut Report, pending: &mut Option<(usize, bool)>, text: &str) {
    let t = text.trim();
    if t.is_empty() {
        return;
    }
    let Some(last) = report.results.len().checked_sub(1) else {
        return; // CUnit banner before the first test
    };
    if let Some((idx, skipped)) = *pending {
        let verdict = if let Some(rest) = t.strip_prefix("passed") {
            Some((
                if skipped {
                    Outcome::Skip
                } else {
                    Outcome::Pass
                },
                rest,
            ))
        } else {
            t.strip_prefix("FAILED").map(|rest| (Outcome::Fail, rest))
        };
        if let Some((outcome, rest)) = verdict {
            report.results[idx].outcome = outcome;
            *pending = None;
            push_message(&mut report.results[idx], rest);
            return;
        }
        if t.contains("[SKIPPED]") {
            *pending = Some((idx, true));
        }
        push_message(&mut report.results[idx], t);
        return;
    }
    push_message(&mut report.results[last], t);
}

fn push_message(r: &mut TestResult, msg: &str) {
    let msg = strip_assert_number(msg.trim());
    // libiscsi repeats the same line for every LBA it probes; keep each distinct line once.
    if msg.is_empty() || r.messages.iter().any(|m| m == msg) {
        return;
    }
    match r.messages.len() {
        n if n < MAX_MESSAGES => r.messages.push(msg.to_string()),
        n if n == MAX_MESSAGES => r.messages.push("... (more output omitted)".into()),
        _ => {}
    }
}

/// CUnit numbers its failed-assertion lines (`12. file.c:40  - CU_ASSERT...`); drop the
/// number so repeats of one assertion collapse into one message.
fn strip_assert_number(msg: &str) -> &str {
    match msg.split_once(". ") {
        Some((n, rest)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => msg,
    }
}

/// Parses the rows after "Run Summary:" and returns the "tests" row.
fn parse_summary<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Option<CunitSummary> {
    for line in lines {
        let mut words = line.split_whitespace();
        if words.next() != Some("tests") {
            continue;
        }
        let nums: Vec<usize> = words.filter_map(|w| w.parse().ok()).collect();
        // Total Ran Passed Failed Inactive
        if let [_total, ran, passed, failed, ..] = nums[..] {
            return Some(CunitSummary {
                ran,
                passed,
                failed,
            });
        }
    }
    None
}

/// Reads a results file written by [`Report::to_results_file`]: `name → outcome`.
pub fn parse_results_file(text: &str) -> Result<BTreeMap<String, Outcome>> {
    let mut m = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split_once('#').map_or(line, |(l, _)| l).trim();
        if line.is_empty() {
            continue;
        }
        let (word, name) = line
            .split_once(char::is_whitespace)
            .with_context(|| format!("line {}: expected `OUTCOME NAME`", i + 1))?;
        let outcome = Outcome::parse(word)
            .with_context(|| format!("line {}: unknown outcome {word:?}", i + 1))?;
        m.insert(name.trim().to_string(), outcome);
    }
    Ok(m)
}

/// Tests that may skip, each with a documented reason (`tests/conformance/allowed-skips.txt`).
#[derive(Clone, Debug, Default)]
pub struct AllowList {
    entries: Vec<(String, String)>,
}

impl AllowList {
    /// Parses `PATTERN  # reason` lines; a pattern is a full test name, or a prefix ending in
    /// `*` (`ALL.Sanitize.*`). Every entry must give a reason.
    pub fn parse(text: &str) -> Result<Self> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (pattern, reason) = t
                .split_once('#')
                .with_context(|| format!("allow-list line {}: `{t}` has no `# reason`", i + 1))?;
            let reason = reason.trim();
            if reason.is_empty() {
                bail!("allow-list line {}: empty reason", i + 1);
            }
            entries.push((pattern.trim().to_string(), reason.to_string()));
        }
        Ok(Self { entries })
    }

    /// Loads the crate's allow-list file.
    pub fn load_default() -> Result<Self> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conformance/allowed-skips.txt");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text)
    }

    /// The reason `name` may skip, if it may.
    pub fn reason(&self, name: &str) -> Option<&str> {
        self.entries.iter().find_map(|(p, reason)| {
            let hit = match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == p,
            };
            hit.then_some(reason.as_str())
        })
    }
}

/// Compares `report` with a baseline (tgtd): per suite, the tests the baseline passes that
/// `report` does not, ignoring allow-listed tests (features scheduled for later issues).
pub fn regressions_vs(
    report: &Report,
    baseline: &BTreeMap<String, Outcome>,
    allow: &AllowList,
) -> Vec<String> {
    let ours = report.outcomes();
    let mut out = Vec::new();
    for (name, theirs) in baseline {
        if *theirs != Outcome::Pass || allow.reason(name).is_some() {
            continue;
        }
        match ours.get(name) {
            Some(Outcome::Pass) => {}
            Some(o) => out.push(format!("{name}: baseline PASS, lunard {o}")),
            None => out.push(format!("{name}: baseline PASS, lunard did not run it")),
        }
    }
    out
}

/// How to run the suite.
#[derive(Clone, Debug)]
pub struct Run {
    /// LUN URL, `iscsi://host:port/iqn/lun`.
    pub url: String,
    /// Second URL for the MultipathIO suite: the same LUN through a second session, ideally
    /// through a second portal of the target (see [`Run::all_multipath`]).
    pub multipath_url: Option<String>,
    /// `-t` test selector (`ALL`, `ALL.Read10`, ...).
    pub selector: String,
    /// Pass `--dataloss` (write tests).
    pub dataloss: bool,
    /// Initiator names for `-i` / `-I` (reservation tests need two).
    pub initiators: Option<(String, String)>,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Run {
    /// The full destructive `ALL` family against `url`, with `url` again as the multipath
    /// URL (a second session through the same portal, for a target with only one).
    pub fn all(url: &str) -> Self {
        Self::all_multipath(url, url)
    }

    /// The full destructive `ALL` family against `url`, with `second_path` (the same LUN
    /// through another portal) as the MultipathIO suite's second path.
    pub fn all_multipath(url: &str, second_path: &str) -> Self {
        Self {
            url: url.to_string(),
            multipath_url: Some(second_path.to_string()),
            selector: "ALL".into(),
            dataloss: true,
            initiators: None,
            timeout: Duration::from_secs(900),
        }
    }

    /// Family part of the selector.
    pub fn family(&self) -> &str {
        self.selector.split('.').next().unwrap_or("ALL")
    }

    /// Runs `iscsi-test-cu` and parses its results, adding failures for tests it listed but
    /// never reported. Returns the report and the raw output.
    pub fn execute(&self) -> Result<(Report, Output)> {
        let expected = list_tests(&self.selector)?;
        let scratch = crate::daemon::scratch_dir("iscsi-test-cu-")?;
        let mut cmd = Command::new("iscsi-test-cu");
        cmd.arg("-t").arg(&self.selector);
        if self.dataloss {
            cmd.arg("--dataloss");
        }
        if let Some((a, b)) = &self.initiators {
            cmd.arg("-i").arg(a).arg("-I").arg(b);
        }
        cmd.arg(&self.url);
        if let Some(m) = &self.multipath_url {
            cmd.arg(m);
        }
        // stderr merged in order is not possible with two pipes; libiscsi prints test output
        // on stdout, so parse stdout and keep stderr for diagnostics.
        let out = process::run_capture(cmd.current_dir(scratch.path()), self.timeout)?;
        if out.timed_out {
            // Keep the verdicts we have; the test running when the clock ran out and every
            // test after it become failures (see add_missing) instead of losing the whole run.
            let mut report = Report::parse_partial(&out.stdout, self.family());
            if let Some(last) = report.results.last_mut() {
                if last.has_no_verdict() {
                    last.messages.push(format!(
                        "iscsi-test-cu killed after {:?} while running this test (target hung?)",
                        self.timeout
                    ));
                }
            }
            report.add_missing(&expected);
            return Ok((report, out));
        }
        let mut report = Report::parse(&out.stdout, self.family()).with_context(|| {
            format!(
                "parsing `{}` output\n{}",
                out.command,
                process::tail(&out.combined(), 4000)
            )
        })?;
        report.add_missing(&expected);
        if report.results.is_empty() {
            bail!(
                "`{}` reported no tests ({})\n--- stdout\n{}\n--- stderr\n{}",
                out.command,
                out.status,
                process::tail(&out.stdout, 4000),
                process::tail(&out.stderr, 4000)
            );
        }
        Ok((report, out))
    }
}

/// Test names (`ALL.Suite.Test`) `iscsi-test-cu -l` lists under `selector`.
pub fn list_tests(selector: &str) -> Result<Vec<String>> {
    let out = process::run(
        Command::new("iscsi-test-cu").arg("-l"),
        Duration::from_secs(30),
    )?;
    let prefix = format!("{selector}.");
    Ok(out
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| l.split('.').count() == 3 && (l.starts_with(&prefix) || *l == selector))
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\n\n     CUnit - A unit testing framework for C - Version 2.1-3\n\
Suite: GetLBAStatus\n\
  Test: Simple ...passed\n\
  Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed\n\
FAILED\n\
    1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)\n\
  Test: UnmapSingle ...    [SKIPPED] Logical unit is fully provisioned. Skipping test\n\
passed\n\
Suite: Reserve6\n\
  Test: LUNReset ...passed    [FAILED] PRIN command: failed with sense. UNIT_ATTENTION\n\
\n\
  Test: UnmapVPD ...    [FAILED] WRITESAME10 command failed with status 2\n\
passed\n\
\n\
Run Summary:    Type  Total    Ran Passed Failed Inactive\n\
              suites      2      2    n/a      0        0\n\
               tests      5      5      4      1        0\n\
             asserts     10     10      9      1      n/a\n";

    #[test]
    fn parses_verdicts_skips_and_messages() {
        let r = Report::parse(SAMPLE, "ALL").unwrap();
        let o = r.outcomes();
        assert_eq!(o["ALL.GetLBAStatus.Simple"], Outcome::Pass);
        assert_eq!(o["ALL.GetLBAStatus.BeyondEol"], Outcome::Fail);
        assert_eq!(o["ALL.GetLBAStatus.UnmapSingle"], Outcome::Skip);
        // Output after a verdict belongs to that test but does not change it.
        assert_eq!(o["ALL.Reserve6.LUNReset"], Outcome::Pass);
        assert!(r.results[3].messages[0].contains("PRIN command"));
        // A [FAILED] line inside a test CUnit passed is informational.
        assert_eq!(o["ALL.Reserve6.UnmapVPD"], Outcome::Pass);
        let fail = &r.results[1];
        assert!(fail.messages.iter().any(|m| m.contains("CU_ASSERT_EQUAL")));
        assert_eq!(
            r.counts(),
            Counts {
                pass: 3,
                skip: 1,
                fail: 1
            }
        );
        assert_eq!(r.suite_counts()["ALL.GetLBAStatus"].fail, 1);
    }

    #[test]
    fn summary_mismatch_is_an_error() {
        let bad = SAMPLE.replace(
            "      5      5      4      1",
            "      6      6      5      1",
        );
        assert!(Report::parse(&bad, "ALL").is_err());
    }

    #[test]
    fn truncated_run_fails_the_open_test_and_missing_ones() {
        let cut = "Suite: Read10\n  Test: Simple ...passed\n  Test: BeyondEol ...";
        let mut r = Report::parse_partial(cut, "ALL");
        r.add_missing(&["ALL.Read10.Simple".into(), "ALL.Read10.ZeroBlocks".into()]);
        let o = r.outcomes();
        assert_eq!(o["ALL.Read10.Simple"], Outcome::Pass);
        assert_eq!(o["ALL.Read10.BeyondEol"], Outcome::Fail);
        assert_eq!(o["ALL.Read10.ZeroBlocks"], Outcome::Fail);
    }

    #[test]
    fn results_file_round_trip() {
        let r = Report::parse(SAMPLE, "ALL").unwrap();
        let text = r.to_results_file("sample");
        assert_eq!(parse_results_file(&text).unwrap(), r.outcomes());
        assert!(parse_results_file("MAYBE ALL.X.Y\n").is_err());
    }

    #[test]
    fn allow_list_patterns_need_reasons() {
        let a = AllowList::parse("# c\nALL.Sanitize.*  # later issue\nALL.X.Y # why\n").unwrap();
        assert_eq!(a.reason("ALL.Sanitize.Reset"), Some("later issue"));
        assert_eq!(a.reason("ALL.X.Y"), Some("why"));
        assert_eq!(a.reason("ALL.X.Yz"), None);
        assert!(AllowList::parse("ALL.X.Y\n").is_err());
    }

    #[test]
    fn regressions_ignore_allow_listed_tests() {
        let r = Report::parse(SAMPLE, "ALL").unwrap();
        let mut base = r.outcomes();
        base.insert("ALL.GetLBAStatus.UnmapSingle".into(), Outcome::Pass);
        base.insert("ALL.Sanitize.Reset".into(), Outcome::Pass);
        let allow = AllowList::parse("ALL.Sanitize.* # later\n").unwrap();
        let reg = regressions_vs(&r, &base, &allow);
        assert_eq!(reg.len(), 1, "{reg:?}");
        assert!(reg[0].starts_with("ALL.GetLBAStatus.UnmapSingle"));
    }

    #[test]
    fn recorded_tgtd_baseline_matches_its_raw_log() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("baseline");
        let (Ok(raw), Ok(txt)) = (
            std::fs::read_to_string(dir.join("tgtd-iscsi-test-cu.log")),
            std::fs::read_to_string(dir.join("tgtd-iscsi-test-cu.txt")),
        ) else {
            panic!("tests/baseline/tgtd-iscsi-test-cu.{{log,txt}} missing");
        };
        let r = Report::parse(&raw, "ALL").unwrap();
        assert_eq!(parse_results_file(&txt).unwrap(), r.outcomes());
        assert!(
            r.summary.is_some(),
            "baseline log lacks CUnit's run summary"
        );
    }
}
