//! Progress reporting: indicatif bars for steps that take more than a moment, plain log lines,
//! and silence with `--quiet`. Bars draw only on a terminal, so logs and CI output stay clean.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where a build reports what it is doing.
#[derive(Clone)]
pub struct Progress {
    multi: MultiProgress,
    quiet: bool,
}

impl Progress {
    /// Bars and lines on stderr, or nothing at all when `quiet`.
    pub fn new(quiet: bool) -> Progress {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
            quiet,
        }
    }

    /// A bar counting `total` bytes.
    pub fn bytes(&self, label: &str, total: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar
    }

    /// A spinner for a step of unknown length.
    pub fn spinner(&self, label: &str) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} {spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    /// A log line (above any bars); nothing when quiet.
    pub fn log(&self, line: impl AsRef<str>) {
        if !self.quiet {
            if self.multi.is_hidden() {
                eprintln!("{}", line.as_ref());
            } else {
                let _ = self.multi.println(line.as_ref());
            }
        }
    }
}
