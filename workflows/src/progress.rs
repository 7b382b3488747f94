//! Running workflows in the command: one [`Runtime`] for the whole process, and the progress of
//! each run on stderr — on a terminal, indicatif bars redrawn in place; in a log or a pipe, a
//! plain line per finished node, without escape codes.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use dataflow_core::Context;
use dataflow_runtime::{Progress, Registry, RunReport, Runtime, Workflow, yaml};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::Error;
use crate::render::status_word;

/// Runs workflows with a progress display on stderr, all through one [`Runtime`]: one registry
/// and one set of circuit breakers for every run of the process, so a store that failed in one
/// run is known to the next.
///
/// The display shows one run at a time: build one `Runner` per process and run one workflow
/// after another (runs that overlap share the display of the latest).
pub struct Runner {
    runtime: Runtime,
    /// The display of the run going on, which the runtime's progress hook draws on.
    display: Arc<Mutex<Option<Display>>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("runtime", &self.runtime).finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner over `registry` (usually [`crate::registry()`]), with default run options.
    pub fn new(registry: Registry) -> Runner {
        let display: Arc<Mutex<Option<Display>>> = Arc::default();
        let hook = display.clone();
        let runtime = Runtime::new(registry).on_progress(move |event| {
            if let Some(display) = lock(&hook).as_mut() {
                display.show(event);
            }
        });
        Runner { runtime, display }
    }

    /// The runtime every run goes through.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The registry workflows are loaded and run with.
    pub fn registry(&self) -> &Registry {
        self.runtime.registry()
    }

    /// Loads and validates the workflow file `file` against [`Runner::registry`].
    pub fn load(&self, file: impl AsRef<Path>) -> Result<Workflow, Error> {
        Ok(yaml::load_file(file, self.registry())?)
    }

    /// Runs `workflow` with `inputs` in `ctx`, showing its progress on stderr.
    pub async fn run(&self, workflow: &Workflow, ctx: &Context, inputs: Value) -> RunReport {
        let _shown = Shown::start(&self.display, workflow.node_names().count());
        self.runtime.run(workflow, ctx, inputs).await
    }
}

fn lock(display: &Mutex<Option<Display>>) -> MutexGuard<'_, Option<Display>> {
    // A panic while drawing leaves nothing half-done that matters: keep drawing.
    display.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The display of one run, finished when the run ends or its future is dropped.
struct Shown<'a>(&'a Mutex<Option<Display>>);

impl<'a> Shown<'a> {
    fn start(slot: &'a Mutex<Option<Display>>, nodes: usize) -> Self {
        if let Some(previous) = lock(slot).replace(Display::start(nodes)) {
            previous.finish();
        }
        Shown(slot)
    }
}

impl Drop for Shown<'_> {
    fn drop(&mut self) {
        if let Some(display) = lock(self.0).take() {
            display.finish();
        }
    }
}

/// `[####----] 3/10 message`
const BAR_TEMPLATE: &str = "[{bar:24}] {pos}/{len} {msg}";

/// How a run's progress is shown.
enum Display {
    /// On a terminal: a bar of finished nodes and, while a `Map` works, a bar of its items.
    Bars {
        all: MultiProgress,
        nodes: ProgressBar,
        items: Option<ProgressBar>,
    },
    /// Elsewhere: a line per finished node, and lines as a `Map` or an import gets through its
    /// items.
    Lines { done: usize, total: usize },
}

impl Display {
    fn start(total: usize) -> Display {
        if !std::io::stderr().is_terminal() {
            return Display::Lines { done: 0, total };
        }
        let all = MultiProgress::new();
        let nodes = all.add(ProgressBar::new(total as u64).with_style(bar_style()));
        Display::Bars { all, nodes, items: None }
    }

    fn show(&mut self, event: &Progress) {
        match (self, event) {
            (Display::Bars { nodes, .. }, Progress::Finished { node, status }) => {
                nodes.set_message(format!("{node} {}", status_word(*status)));
                nodes.inc(1);
            }
            (Display::Bars { all, items, .. }, Progress::Items { node, done, total }) => {
                let bar = items.get_or_insert_with(|| all.add(ProgressBar::new(*total as u64).with_style(bar_style())));
                bar.set_length(*total as u64);
                bar.set_position(*done as u64);
                bar.set_message(format!("items ({node})"));
            }
            (Display::Lines { done, total }, Progress::Finished { node, status }) => {
                *done += 1;
                eprintln!("{done}/{total} {node} {}", status_word(*status));
            }
            // A line at each tenth of the items, so a long node shows it is getting on.
            (Display::Lines { .. }, Progress::Items { node, done, total })
                if done == total || (*total >= 10 && done % total.div_ceil(10) == 0 && *done > 0) =>
            {
                eprintln!("{done}/{total} items ({node})");
            }
            (_, Progress::Items { .. } | Progress::Started { .. }) => {}
        }
    }

    fn finish(self) {
        if let Display::Bars { nodes, items, .. } = self {
            if let Some(items) = items {
                items.finish();
            }
            nodes.finish();
        }
    }
}

/// The progress of one long task outside a workflow run (`dataflow reembed`), as a run's
/// items show: a bar on a terminal, elsewhere a line at each tenth.
pub struct TaskProgress {
    label: String,
    bar: Option<ProgressBar>,
    /// The tenth of the work the last line showed.
    shown_tenth: Option<u64>,
}

impl TaskProgress {
    /// Starts showing the progress of `label`.
    pub fn start(label: impl Into<String>) -> TaskProgress {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0).with_style(bar_style());
            bar.set_message(label.clone());
            bar
        });
        TaskProgress {
            label,
            bar,
            shown_tenth: None,
        }
    }

    /// `done` of `total` are done.
    pub fn update(&mut self, done: u64, total: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            None => {
                let tenth = (done * 10).checked_div(total).map_or(10, |t| t.min(10));
                if self.shown_tenth.is_none_or(|shown| tenth > shown) {
                    self.shown_tenth = Some(tenth);
                    eprintln!("{done}/{total} {}", self.label);
                }
            }
        }
    }

    /// Ends the display (the bar stays drawn at its last position).
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

fn bar_style() -> ProgressStyle {
    // The template is a constant that parses; the default style is only a fallback.
    ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("#-")
}
