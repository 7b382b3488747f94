//! Fresh directories for the embedded backends: one SQLite file per test, under the system's
//! temporary directory; those of finished test processes are removed by the next run.

use std::path::PathBuf;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory every test's embedded stores live under.
pub fn root() -> PathBuf {
    std::env::temp_dir().join("dataflow-tests-embedded")
}

/// A new, empty directory for one test's embedded stores; `hint` names it.
pub fn fresh_home(hint: &str) -> PathBuf {
    static CLEAN: Once = Once::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    CLEAN.call_once(|| {
        // Leftovers of earlier runs; directories of other live test processes carry their pid.
        if let Ok(entries) = std::fs::read_dir(root()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(&format!("_{pid}")) && !process_alive(&name) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    });
    let clean: String = hint
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .take(40)
        .collect();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = root().join(format!("{clean}_{n}_{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Whether the test process named by the directory's `_{pid}` suffix still runs.
fn process_alive(name: &str) -> bool {
    name.rsplit('_')
        .next()
        .and_then(|pid| pid.parse::<u32>().ok())
        .is_some_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}
