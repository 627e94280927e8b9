//! A progress bar for long runs, shown (on stderr) only when stdout is a terminal (so piped output and
//! `--json` stay clean).

use std::io::IsTerminal;

/// Counts finished units of work (travellers served, intervals cleared) on stderr.
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar for `total` units, labelled `what`; hidden unless stdout is a terminal.
    pub fn new(total: u64, what: &str) -> Progress {
        let bar = match std::io::stdout().is_terminal() {
            true => indicatif::ProgressBar::new(total),
            false => indicatif::ProgressBar::hidden(),
        };
        let style = indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_owned());
        Progress { bar }
    }

    /// A hidden bar (tests, `--json`).
    pub fn hidden() -> Progress {
        Progress { bar: indicatif::ProgressBar::hidden() }
    }

    /// One more unit done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
