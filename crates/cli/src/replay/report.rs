//! The replay's report: a line per message, and whether any differed.

use std::collections::BTreeSet;

use super::diff::Verdict;

/// Counts and prints the per-message lines.
#[derive(Default)]
pub(super) struct Report {
    pub(super) checked: usize,
    pub(super) failed: usize,
    /// Matches that needed a known Mono deviation.
    pub(super) known: usize,
    /// See [`ReplayArgs::mono_quirks`].
    pub(super) mono: bool,
}

impl Report {
    pub(super) fn ok(&mut self, line: String) {
        self.checked += 1;
        println!("  ok    {line}");
    }

    pub(super) fn note(line: String) {
        println!("  sent  {line}");
    }

    /// Something the replay could not check, said rather than passed over.
    pub(super) fn remark(line: String) {
        println!("  note  {line}");
    }

    pub(super) fn fail(&mut self, line: String) {
        self.checked += 1;
        self.failed += 1;
        println!("  DIFF  {line}");
    }

    /// A match only thanks to Mono's documented deviations `known` (FINDINGS sections).
    pub(super) fn known(&mut self, what: String, known: &BTreeSet<&'static str>) {
        self.checked += 1;
        self.known += 1;
        let sections: Vec<&str> = known.iter().copied().collect();
        println!("  known {what} (Mono: FINDINGS {})", sections.join(", "));
    }

    pub(super) fn verdict(&mut self, what: String, verdict: Verdict) {
        match verdict.diff {
            Some(d) => self.fail(format!("{what}: {d}")),
            None if !verdict.known.is_empty() => self.known(what, &verdict.known),
            None => self.ok(what),
        }
    }
}
