//! Progress on the terminal: one line per table running, a bar while the amount of work is
//! known (bytes loaded, rows hashed, rows written), a spinner naming the phase in between.

/// Tables run at once share the terminal: one spinner line each, drawn together.
fn progress_bars() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    })
}

/// Print (with `print`) above the spinners of tables still running, not through them.
pub fn above_progress<R>(print: impl FnOnce() -> R) -> R {
    progress_bars().suspend(print)
}

/// A table's line on the terminal: a bar while the amount of work is known (bytes loaded, rows
/// hashed, rows written), else a spinner naming the phase. Draws nothing when stderr is not a
/// terminal or with `--quiet`.
pub struct Progress(Option<indicatif::ProgressBar>);

/// What a progress bar counts.
#[derive(Clone, Copy)]
pub enum Counting {
    /// Bytes read.
    Bytes,
    /// Rows done.
    Rows,
}

impl Progress {
    /// A line for `table`, drawn when `enabled`.
    pub fn new(enabled: bool, table: &str) -> Self {
        if !enabled {
            return Progress(None);
        }
        let bar = progress_bars().add(indicatif::ProgressBar::new_spinner());
        bar.set_prefix(table.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        let progress = Progress(Some(bar));
        progress.phase("starting");
        progress
    }

    /// A spinner: the phase's length is not known.
    pub fn phase(&self, message: &'static str) {
        if let Some(bar) = &self.0 {
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
                    .expect("a valid template"),
            );
            bar.set_message(message);
        }
    }

    /// A bar of `total` bytes or rows.
    pub fn bar(&self, message: &'static str, total: u64, counting: Counting) {
        if let Some(bar) = &self.0 {
            let amounts = match counting {
                Counting::Bytes => "{bytes}/{total_bytes}",
                Counting::Rows => "{human_pos}/{human_len} rows",
            };
            // The spinner first, then the amounts: no frame shows the last bar's amounts.
            self.phase(message);
            bar.set_position(0);
            bar.set_length(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{spinner}} {{prefix}}: {{msg}} [{{bar:30}}] {amounts} ({{elapsed}})"
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
    }

    /// Count `amount` more bytes or rows done.
    pub fn advance(&self, amount: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(amount);
        }
    }
}

impl crate::source::LoadProgress for Progress {
    fn total_bytes(&self, bytes: u64) {
        self.bar("loading the source", bytes, Counting::Bytes);
    }

    fn bytes_read(&self, bytes: u64) {
        self.advance(bytes);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
