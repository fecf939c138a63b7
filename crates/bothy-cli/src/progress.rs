//! Progress of long admin jobs (the image build): a bar on a terminal, plain
//! lines otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports numbered steps and free-form lines.
pub struct StepProgress {
    bar: Option<ProgressBar>,
}

impl StepProgress {
    /// A bar if stderr is a terminal, plain lines otherwise.
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("{spinner} [{pos}/{len}] {prefix} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self { bar }
    }

    /// Step `n` of `of` started.
    pub fn step(&self, n: u32, of: u32, what: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(u64::from(of));
                bar.set_position(u64::from(n));
                bar.set_prefix(what.to_string());
                bar.set_message("");
            }
            None => eprintln!("[{n}/{of}] {what}"),
        }
    }

    /// A line of output from the current step.
    pub fn line(&self, text: &str) {
        let text: String = text.chars().filter(|c| !c.is_control()).collect();
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => eprintln!("  {text}"),
        }
    }

    /// The job ended; `message` says how.
    pub fn finish(&self, message: &str) {
        match &self.bar {
            Some(bar) => {
                if let Some(len) = bar.length() {
                    bar.set_position(len);
                }
                bar.finish_and_clear();
                eprintln!("{message}");
            }
            None => eprintln!("{message}"),
        }
    }
}

/// A spinner with a message while one call runs, on a terminal only:
/// scripts and logs see the result line alone.
pub struct Spinner(Option<ProgressBar>);

impl Spinner {
    pub fn start(message: &str) -> Self {
        Self(std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_message(message.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }))
    }

    pub fn stop(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Default for StepProgress {
    fn default() -> Self {
        Self::new()
    }
}
