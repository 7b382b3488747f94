//! The CPU budget of a stretch of bench work: how many CPU milliseconds the bench process and
//! each server's process tree spent on it, per unit of work, and the rate the machine's cores
//! allow at that cost. Read from `/proc` before and after.
//!
//! What is counted, per process: `utime + stime` of `/proc/<pid>/stat` (every thread of the
//! process, ended threads included), plus `cutime + cstime`, the times of the children it has
//! ended and waited for. A server is its process and every descendant (found through the
//! `ppid` of every `/proc/*/stat`), so a PostgreSQL backend that exits during the work is not
//! lost: the postmaster waits for it, and from then on its time is in the postmaster's
//! `cutime + cstime`. What is still missed: a process whose time goes to a parent outside the
//! tree (one orphaned and adopted by init), and a process ended and waited for in the instant
//! between reading its own line and its parent's (counted twice then, or not at all: one
//! process's time, at either end of the work). The bench process is counted alone: the
//! harness's watchdog shells, and through them the local servers, are its children.
//!
//! [`CpuSnapshot`] is the plain form the soak bench uses: every process's own time by name,
//! and the machine's busy, steal and iowait time.

use std::collections::HashMap;
use std::time::Instant;

use dataflow_tests::fixture::Backend;
use dataflow_tests::{Provider, ServiceKind, Services};
use serde_json::{Value as Json, json};

/// Clock ticks per second of the times in `/proc` (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    procfs::ticks_per_second()
}

/// The CPU times of one process so far, in clock ticks ([`ticks_per_second`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessTimes {
    /// Its command name (`comm`).
    pub name: String,
    /// Its parent's pid (0 for the kernel's own).
    pub ppid: u32,
    /// User and system time of the process itself, all its threads (`utime + stime`).
    pub own: u64,
    /// User and system time of its children that have ended and been waited for, with what
    /// they had counted of their own children in turn (`cutime + cstime`).
    pub waited_children: u64,
}

/// Every process on the machine at one moment, from `/proc/<pid>/stat`.
pub struct ProcessTable {
    processes: HashMap<u32, ProcessTimes>,
}

/// The CPU time of a process tree so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeTimes {
    /// Clock ticks: every process's own and waited-for children's time.
    pub ticks: u64,
    /// Processes in the tree, its root included.
    pub processes: usize,
}

impl ProcessTable {
    /// Reads every `/proc/<pid>/stat`; a process that ends while the table is read is left out.
    ///
    /// # Panics
    ///
    /// When `/proc` cannot be listed.
    pub fn read() -> ProcessTable {
        let processes = procfs::process::all_processes()
            .expect("listing /proc")
            .filter_map(|process| {
                let stat = process.ok()?.stat().ok()?;
                // cutime and cstime are signed in the kernel's format, never negative in fact.
                let waited = stat.cutime.max(0) as u64 + stat.cstime.max(0) as u64;
                let times = ProcessTimes {
                    name: stat.comm,
                    ppid: u32::try_from(stat.ppid).unwrap_or(0),
                    own: stat.utime + stat.stime,
                    waited_children: waited,
                };
                Some((u32::try_from(stat.pid).ok()?, times))
            })
            .collect();
        ProcessTable { processes }
    }

    /// The times of process `pid`, when it was running.
    pub fn get(&self, pid: u32) -> Option<&ProcessTimes> {
        self.processes.get(&pid)
    }

    /// `root` and every process descended from it, `root` first; empty when `root` was not
    /// running.
    pub fn tree_pids(&self, root: u32) -> Vec<u32> {
        if !self.processes.contains_key(&root) {
            return Vec::new();
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, times) in &self.processes {
            children.entry(times.ppid).or_default().push(*pid);
        }
        let mut tree = vec![root];
        let mut next = 0;
        while let Some(&pid) = tree.get(next) {
            tree.extend(children.get(&pid).into_iter().flatten().filter(|&&child| child != root));
            next += 1;
        }
        tree
    }

    /// The CPU time of `root`'s tree ([`ProcessTable::tree_pids`]): each process's own time
    /// and its waited-for children's; `None` when `root` was not running.
    pub fn tree(&self, root: u32) -> Option<TreeTimes> {
        let pids = self.tree_pids(root);
        if pids.is_empty() {
            return None;
        }
        let ticks = pids
            .iter()
            .filter_map(|pid| self.get(*pid))
            .map(|t| t.own + t.waited_children)
            .sum();
        Some(TreeTimes {
            ticks,
            processes: pids.len(),
        })
    }
}

/// How one process of a budget is counted.
#[derive(Debug, Clone)]
enum Watch {
    /// This process alone.
    Own(u32),
    /// The process and its descendants.
    Tree(u32),
    /// Not measured, and why.
    NotMeasured(&'static str),
}

/// A process the budget reports on, under a short key (`bench`, `postgres`, ...).
#[derive(Debug, Clone)]
pub struct Watched {
    key: &'static str,
    name: String,
    watch: Watch,
}

impl Watched {
    /// Whether its CPU is measured: not a server that runs elsewhere or is not running.
    pub fn is_measured(&self) -> bool {
        !matches!(self.watch, Watch::NotMeasured(_))
    }

    /// The process `pid` alone, under `key` (e.g. a `dataflow worker` the bench started).
    pub fn process(key: &'static str, name: String, pid: u32) -> Watched {
        Watched {
            key,
            name,
            watch: Watch::Own(pid),
        }
    }
}

/// Keys and names of the four servers, in the order the budget prints them.
const SERVERS: [(ServiceKind, &str, &str); 4] = [
    (ServiceKind::Postgres, "postgres", "PostgreSQL"),
    (ServiceKind::Redis, "redis", "Redis"),
    (ServiceKind::Chroma, "chroma", "Chroma"),
    (ServiceKind::Bolt, "graph", "graph server"),
];

/// The processes a workflow bench on `backend` runs on: this process (`bench`), and on the
/// servers each server's process tree (`postgres`, `redis`, `chroma`, `graph`), from the
/// harness's [`Services::server_pid`]. Servers run elsewhere with the external provider, and
/// a server this binary has not started is not running: both are listed as not measured.
pub async fn workload_processes(backend: Backend) -> Vec<Watched> {
    let bench = Watched {
        key: "bench",
        name: match backend {
            Backend::Servers => "bench (this process)".into(),
            Backend::Embedded => "bench (this process, every store inside)".into(),
        },
        watch: Watch::Own(std::process::id()),
    };
    if backend == Backend::Embedded {
        return vec![bench];
    }
    let services = Services::global().await;
    let mut watched = vec![bench];
    for (kind, key, product) in SERVERS {
        let watch = match (services.provider(), services.server_pid(kind)) {
            (Provider::External, _) => Watch::NotMeasured("external server"),
            (_, Some(pid)) => Watch::Tree(pid),
            (_, None) => Watch::NotMeasured("not running"),
        };
        let name = match &watch {
            Watch::Tree(pid) => format!("{product} ({}, pid {pid}, and descendants)", command_name(*pid)),
            _ => product.to_owned(),
        };
        watched.push(Watched { key, name, watch });
    }
    watched
}

/// The process's command name (`comm`), or `?` when it is gone.
fn command_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).map_or_else(|_| "?".into(), |c| c.trim().to_owned())
}

/// The whole machine's CPU time so far, in clock ticks, from `/proc/stat`.
#[derive(Debug, Clone, Copy)]
struct MachineTicks {
    /// The cores ran anything: user, nice, system, irq, softirq.
    busy: u64,
    /// The hypervisor ran something else while this machine wanted its cores.
    steal: u64,
    /// Cores were idle with a disk request outstanding.
    iowait: u64,
}

impl MachineTicks {
    fn read() -> MachineTicks {
        use procfs::CurrentSI as _;
        let cpu = procfs::KernelStats::current().expect("/proc/stat").total;
        MachineTicks {
            busy: cpu.user + cpu.nice + cpu.system + cpu.irq.unwrap_or(0) + cpu.softirq.unwrap_or(0),
            steal: cpu.steal.unwrap_or(0),
            iowait: cpu.iowait.unwrap_or(0),
        }
    }
}

/// Milliseconds of `ticks` clock ticks.
fn ticks_ms(ticks: u64) -> f64 {
    ticks as f64 * 1e3 / ticks_per_second() as f64
}

/// The CPU time used so far by every process on the machine and the machine's totals: two
/// snapshots tell which process used the CPU in between, and how much the hypervisor took
/// (steal) or the disks held up (iowait).
pub struct CpuSnapshot {
    processes: ProcessTable,
    machine: MachineTicks,
}

/// CPU use between two [`CpuSnapshot`]s, in seconds of one core.
pub struct CpuUse {
    /// Per process name (`comm`), each process's own time (`utime + stime`), most first.
    pub by_process: Vec<(String, f64)>,
    /// Time the machine's cores ran anything (user, nice, system, irq, softirq).
    pub busy: f64,
    /// Time the hypervisor ran something else while this machine wanted its cores.
    pub steal: f64,
    /// Time cores were idle with a disk request outstanding.
    pub iowait: f64,
}

impl CpuSnapshot {
    /// Reads `/proc/stat` and every `/proc/<pid>/stat` (processes that end while being read
    /// are left out).
    pub fn take() -> CpuSnapshot {
        CpuSnapshot {
            machine: MachineTicks::read(),
            processes: ProcessTable::read(),
        }
    }

    /// What was used between `earlier` and this snapshot.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuUse {
        let seconds = |ticks: u64| ticks_ms(ticks) / 1e3;
        let mut by_name: std::collections::BTreeMap<&str, u64> = Default::default();
        for (pid, now) in &self.processes.processes {
            // A pid reused by another program starts from nothing.
            let before = earlier.processes.get(*pid).filter(|b| b.name == now.name).map_or(0, |b| b.own);
            *by_name.entry(now.name.as_str()).or_default() += now.own.saturating_sub(before);
        }
        let mut by_process: Vec<(String, f64)> = by_name
            .into_iter()
            .filter(|(_, ticks)| *ticks > 0)
            .map(|(name, ticks)| (name.to_string(), seconds(ticks)))
            .collect();
        by_process.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (now, then) = (self.machine, earlier.machine);
        CpuUse {
            by_process,
            busy: seconds(now.busy.saturating_sub(then.busy)),
            steal: seconds(now.steal.saturating_sub(then.steal)),
            iowait: seconds(now.iowait.saturating_sub(then.iowait)),
        }
    }
}

/// A budget being measured: the processes' times when it started.
pub struct CpuMeter {
    watched: Vec<Watched>,
    before: CpuSnapshot,
    started: Instant,
}

/// One row of a [`CpuBudget`].
#[derive(Debug, Clone)]
struct Row {
    key: &'static str,
    name: String,
    /// CPU milliseconds, or why not measured.
    ms: Result<f64, &'static str>,
    /// Processes in the tree at the end (1 for a process counted alone).
    processes: usize,
    /// Counted as a process tree.
    tree: bool,
}

/// What the watched processes used between [`CpuMeter::start`] and [`CpuMeter::stop`].
#[derive(Debug, Clone)]
pub struct CpuBudget {
    rows: Vec<Row>,
    seconds: f64,
    /// Busy and stolen CPU milliseconds of the whole machine.
    machine: (f64, f64),
    cores: usize,
}

impl CpuMeter {
    /// Reads the times of `watched` (and of the machine) now.
    pub fn start(watched: Vec<Watched>) -> CpuMeter {
        CpuMeter {
            before: CpuSnapshot::take(),
            started: Instant::now(),
            watched,
        }
    }

    /// Reads the times again and returns what each process used since [`CpuMeter::start`].
    pub fn stop(self) -> CpuBudget {
        let after = CpuSnapshot::take();
        let seconds = self.started.elapsed().as_secs_f64();
        let (before, now) = (&self.before.processes, &after.processes);
        let rows = self
            .watched
            .into_iter()
            .map(|w| {
                let (ms, processes) = match w.watch {
                    Watch::Own(pid) => match (before.get(pid), now.get(pid)) {
                        (Some(b), Some(a)) => (Ok(ticks_ms(a.own.saturating_sub(b.own))), 1),
                        _ => (Err("ended"), 0),
                    },
                    Watch::Tree(pid) => match (before.tree(pid), now.tree(pid)) {
                        (Some(b), Some(a)) => (Ok(ticks_ms(a.ticks.saturating_sub(b.ticks))), a.processes),
                        _ => (Err("ended"), 0),
                    },
                    Watch::NotMeasured(why) => (Err(why), 0),
                };
                Row {
                    key: w.key,
                    tree: matches!(w.watch, Watch::Tree(_)),
                    name: w.name,
                    ms,
                    processes,
                }
            })
            .collect();
        let (m_before, m_after) = (self.before.machine, after.machine);
        CpuBudget {
            rows,
            seconds,
            machine: (
                ticks_ms(m_after.busy.saturating_sub(m_before.busy)),
                ticks_ms(m_after.steal.saturating_sub(m_before.steal)),
            ),
            cores: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

impl CpuBudget {
    /// CPU milliseconds of every watched process together, when each was measured.
    pub fn total_ms(&self) -> Option<f64> {
        self.rows.iter().map(|r| r.ms.ok()).sum()
    }

    /// CPU milliseconds of the measured processes only.
    fn measured_ms(&self) -> f64 {
        self.rows.iter().filter_map(|r| r.ms.ok()).sum()
    }

    /// CPU milliseconds per second the machine's cores offer (1,000 per core).
    pub fn capacity_ms_per_second(&self) -> f64 {
        self.cores as f64 * 1e3
    }

    /// Prints the budget: per process the CPU milliseconds per `unit` (over `units` of them),
    /// the total, the rate the cores allow at that cost beside `measured_per_second`, and how
    /// busy the whole machine was.
    pub fn print(&self, unit: &str, units: usize, measured_per_second: f64) {
        let per = |ms: f64| ms / units as f64;
        let measured = self.measured_ms();
        let names: Vec<String> = self
            .rows
            .iter()
            .map(|r| match r.processes {
                0 | 1 => r.name.clone(),
                n => format!("{} [{n} processes]", r.name),
            })
            .collect();
        let (total, total_name) = match self.total_ms() {
            Some(total) => (total, "total"),
            None => (measured, "total of the measured processes only"),
        };
        let width = names.iter().map(String::len).chain([total_name.len()]).max().unwrap_or(0);
        let per_unit = format!("ms/{unit}");
        let w = per_unit.len().max(8);
        println!(
            "CPU of {units} {unit}s over {:.2} s (clock {} ticks/s):",
            self.seconds,
            ticks_per_second()
        );
        println!("  {:width$} {:>9} {per_unit:>w$} {:>6}", "process", "CPU ms", "share");
        for (row, name) in self.rows.iter().zip(&names) {
            match row.ms {
                Ok(ms) => {
                    let share = if measured > 0.0 { ms / measured * 100.0 } else { 0.0 };
                    println!("  {name:width$} {ms:9.0} {:w$.3} {share:5.1}%", per(ms));
                }
                Err(why) => println!("  {name:width$} not measured ({why})"),
            }
        }
        println!("  {total_name:width$} {total:9.0} {:w$.3}", per(total));
        let capacity = self.capacity_ms_per_second();
        if total > 0.0 {
            println!(
                "  budget: {} cores = {capacity:.0} CPU ms/s; at {:.3} CPU ms per {unit} they allow {:.0} {unit}s/s; measured {measured_per_second:.0}/s",
                self.cores,
                per(total),
                capacity / per(total)
            );
        }
        let (busy, steal) = self.machine;
        println!(
            "  machine: {:.2} of {} cores busy on average, {:.2} by the processes above, {:.2} by others; steal {:.2} cores",
            busy / 1e3 / self.seconds,
            self.cores,
            measured / 1e3 / self.seconds,
            (busy - measured).max(0.0) / 1e3 / self.seconds,
            steal / 1e3 / self.seconds
        );
        if self.rows.iter().any(|r| r.tree) {
            println!(
                "  (a server is its process and every descendant; an ended process stays counted through the parent that waited for it, e.g. PostgreSQL's backends through the postmaster)"
            );
        }
    }

    /// The figures for a bench's JSON file: `cpu_ms_per_{unit}_{key}` for every process and
    /// `cpu_ms_per_{unit}_total` (`null` when not measured), and the rate the cores allow,
    /// `cpu_allowed_{unit}s_per_second` (`null` without a total).
    pub fn figures(&self, unit: &str, units: usize) -> serde_json::Map<String, Json> {
        let per = |ms: Option<f64>| ms.map(|ms| ms / units as f64);
        let mut figures: serde_json::Map<String, Json> = self
            .rows
            .iter()
            .map(|r| (format!("cpu_ms_per_{unit}_{}", r.key), json!(per(r.ms.ok()))))
            .collect();
        let total = per(self.total_ms());
        figures.insert(format!("cpu_ms_per_{unit}_total"), json!(total));
        figures.insert(
            format!("cpu_allowed_{unit}s_per_second"),
            json!(total.map(|t| self.capacity_ms_per_second() / t)),
        );
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::Duration;

    /// Long enough for any loaded machine to give a busy process a clock tick.
    const PATIENCE: Duration = Duration::from_secs(120);

    /// Computes until this process's own CPU time has grown past what it was on entry.
    fn compute_until_counted() {
        let me = std::process::id();
        let before = ProcessTable::read().get(me).expect("this process in /proc").own;
        let started = Instant::now();
        let mut x = 1u64;
        loop {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
            }
            if ProcessTable::read().get(me).expect("this process in /proc").own > before {
                return;
            }
            assert!(started.elapsed() < PATIENCE, "no CPU time counted after {PATIENCE:?} of computing");
        }
    }

    #[test]
    fn own_cpu_time_grows_while_the_process_computes() {
        // Returns only once /proc shows the growth.
        compute_until_counted();
    }

    #[test]
    fn two_snapshots_name_the_process_that_computed_between_them() {
        let earlier = CpuSnapshot::take();
        compute_until_counted();
        let used = CpuSnapshot::take().since(&earlier);
        let me = ProcessTable::read()
            .get(std::process::id())
            .expect("this process in /proc")
            .name
            .clone();
        assert!(
            used.by_process.iter().any(|(name, seconds)| *name == me && *seconds > 0.0),
            "{me} missing from {:?}",
            used.by_process
        );
    }

    #[test]
    fn an_ended_child_stays_counted_through_its_parent() {
        let me = std::process::id();
        let before = ProcessTable::read().get(me).expect("this process in /proc").waited_children;
        let started = Instant::now();
        loop {
            let status = Command::new("sh")
                .args(["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"])
                .status()
                .expect("running sh");
            assert!(status.success());
            if ProcessTable::read().get(me).expect("this process in /proc").waited_children > before {
                break;
            }
            assert!(started.elapsed() < PATIENCE, "no child time counted after {PATIENCE:?}");
        }
    }

    #[test]
    fn a_running_child_is_in_its_parents_tree() {
        let mut child = Command::new("sleep").arg("60").spawn().expect("running sleep");
        let table = ProcessTable::read();
        let me = std::process::id();
        let tree = table.tree_pids(me);
        let counted = table.tree(me).expect("this process in /proc");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree.first(), Some(&me));
        assert!(tree.contains(&child.id()), "{tree:?} lacks the child {}", child.id());
        assert_eq!(counted.processes, tree.len());
        assert!(table.tree_pids(u32::MAX).is_empty());
    }
}
