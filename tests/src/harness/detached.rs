//! A user's servers on this machine: the four [`Recipe`]s run detached from the command that
//! starts them (a session of their own, the pid and the log in each server's directory), with
//! their data in one folder that stays across stop and start. `dataflow-services` (behind
//! `scripts/services`) is the command.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::ServiceKind;
use super::recipe::{self, ArcadeDb, Recipe, SetupError};

/// The four servers, in the order they start (and stop in reverse).
pub const ALL: [ServiceKind; 4] = [ServiceKind::Postgres, ServiceKind::Redis, ServiceKind::Chroma, ServiceKind::Bolt];

/// The database created in PostgreSQL for the user's data.
pub const DATABASE: &str = "dataflow";

/// ArcadeDB's HTTP port when none is given.
pub const DEFAULT_ARCADEDB_HTTP_PORT: u16 = 2480;

/// The variable that names the data folder when `--dir` is not given.
pub const DATA_ENV: &str = "DATAFLOW_SERVICES_DATA";

/// The port each server listens on when none is given: the usual ones.
pub fn default_port(kind: ServiceKind) -> u16 {
    match kind {
        ServiceKind::Postgres => 5432,
        ServiceKind::Redis => 6379,
        ServiceKind::Chroma => 8000,
        ServiceKind::Bolt => 7687,
    }
}

/// A server's ports: the one clients use, and ArcadeDB's HTTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// The port clients use (Bolt's for ArcadeDB).
    pub port: u16,
    /// ArcadeDB's HTTP port; `None` for the other servers.
    pub http_port: Option<u16>,
}

impl Ports {
    /// The usual ports of `kind`.
    pub fn default_for(kind: ServiceKind) -> Self {
        Ports {
            port: default_port(kind),
            http_port: (kind == ServiceKind::Bolt).then_some(DEFAULT_ARCADEDB_HTTP_PORT),
        }
    }
}

/// The folder that holds the four servers, one directory each (`postgres`, `redis`, `chroma`,
/// `bolt`), with their data, logs, pid files and recorded ports.
#[derive(Debug, Clone)]
pub struct DataFolder {
    root: PathBuf,
}

impl DataFolder {
    /// The folder `root` (made absolute; it need not exist yet).
    pub fn new(root: &Path) -> Self {
        let absolute = std::path::absolute(root).unwrap_or_else(|_| root.to_owned());
        // The form the kernel reports for a process's working directory, when it exists.
        let root = std::fs::canonicalize(&absolute).unwrap_or(absolute);
        DataFolder { root }
    }

    /// `DATAFLOW_SERVICES_DATA`, or `data` beside the virtualenv of `scripts/install-services`
    /// (`.services/data` in the repository).
    pub fn default_root() -> PathBuf {
        std::env::var_os(DATA_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| recipe::services_dir().join("data"))
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one server.
    pub fn server_dir(&self, kind: ServiceKind) -> PathBuf {
        self.root.join(kind.name())
    }

    fn ports_path(&self, kind: ServiceKind) -> PathBuf {
        self.server_dir(kind).join("server.ports")
    }

    /// The ports the server was last started on, if it ever was.
    pub fn recorded_ports(&self, kind: ServiceKind) -> Option<Ports> {
        let text = std::fs::read_to_string(self.ports_path(kind)).ok()?;
        let mut numbers = text.split_whitespace().map(str::parse::<u16>);
        let port = numbers.next()?.ok()?;
        let http_port = numbers.next().and_then(Result::ok);
        Some(Ports { port, http_port })
    }

    fn password_path(&self) -> PathBuf {
        self.server_dir(ServiceKind::Bolt).join("root-password")
    }

    /// ArcadeDB's root password, once its first start has generated it.
    pub fn arcadedb_password(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.password_path()).ok()?;
        Some(text.trim().to_owned()).filter(|p| !p.is_empty())
    }

    /// ArcadeDB's root password: the one kept in the folder, or a new random one, written
    /// there (readable by its owner only) before ArcadeDB's first start sets it.
    pub fn ensure_arcadedb_password(&self) -> Result<String, SetupError> {
        if let Some(password) = self.arcadedb_password() {
            return Ok(password);
        }
        let failed = |action: String| move |source: io::Error| SetupError::Io { action, source };
        let mut bytes = [0u8; 18];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut bytes))
            .map_err(failed("reading /dev/urandom".into()))?;
        // Letters and digits only (about 104 bits): it goes into export lines, a URL and
        // ArcadeDB's command line without quoting or escaping.
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
        let password: String = bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
        let path = self.password_path();
        std::fs::create_dir_all(self.server_dir(ServiceKind::Bolt)).map_err(failed(format!("creating {}", self.root.display())))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(failed(format!("creating {}", path.display())))?;
        io::Write::write_all(&mut file, format!("{password}\n").as_bytes()).map_err(failed(format!("writing {}", path.display())))?;
        Ok(password)
    }

    /// The recipe of a server of this folder on `ports`, or the ports it last ran on, or the
    /// usual ones.
    pub fn recipe(&self, kind: ServiceKind, ports: Option<Ports>) -> Recipe {
        let ports = ports
            .or_else(|| self.recorded_ports(kind))
            .unwrap_or_else(|| Ports::default_for(kind));
        let arcadedb = (kind == ServiceKind::Bolt).then(|| ArcadeDb {
            http_port: ports.http_port.unwrap_or(DEFAULT_ARCADEDB_HTTP_PORT),
            root_password: self.arcadedb_password().unwrap_or_default(),
        });
        Recipe::new(kind, self.server_dir(kind), ports.port, arcadedb)
    }

    /// The pid of the server's process when it is running: the pid file names a live process
    /// that works in, or was started with, the server's directory (not a stranger that reused
    /// a stale pid).
    pub fn running(&self, recipe: &Recipe) -> Option<u32> {
        let pid = recipe.pid()?;
        if !recipe::process_alive(pid) {
            return None;
        }
        let dir = recipe.dir.as_os_str().as_encoded_bytes();
        let in_dir = std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&recipe.dir));
        let named = std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| line.windows(dir.len()).any(|w| w == dir));
        (in_dir || named).then_some(pid)
    }

    /// Starts the server, once [`Recipe::prepare`]d, detached: a session of its own (so it
    /// outlives this command and its terminal), output appended to its log, its pid and ports
    /// recorded. Returns the process; [`Recipe::wait_healthy`] tells when it serves.
    pub fn spawn(&self, recipe: &Recipe) -> Result<Child, SetupError> {
        let mut cmd = recipe.command()?;
        let failed = |action: String| move |source: io::Error| SetupError::Io { action, source };
        let log_path = recipe.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(failed(format!("opening {}", log_path.display())))?;
        let log_too = log.try_clone().map_err(failed(format!("opening {}", log_path.display())))?;
        cmd.stdout(log).stderr(log_too);
        // SAFETY: setsid is async-signal-safe and touches no memory of this process.
        unsafe {
            cmd.pre_exec(|| if setsid() == -1 { Err(io::Error::last_os_error()) } else { Ok(()) });
        }
        let child = cmd.spawn().map_err(failed(format!("starting {}", recipe.kind.name())))?;
        let ports = match &recipe.arcadedb {
            Some(a) => format!("{} {}\n", recipe.port, a.http_port),
            None => format!("{}\n", recipe.port),
        };
        std::fs::write(recipe.pid_path(), format!("{}\n", child.id()))
            .map_err(failed(format!("writing {}", recipe.pid_path().display())))?;
        std::fs::write(self.ports_path(recipe.kind), ports)
            .map_err(failed(format!("writing {}", self.ports_path(recipe.kind).display())))?;
        Ok(child)
    }
}

unsafe extern "C" {
    fn setsid() -> i32;
}

/// Creates `name` in the PostgreSQL server of `recipe` unless it exists; true when created.
pub fn create_database(recipe: &Recipe, name: &str) -> Result<bool, SetupError> {
    let bin = recipe::postgres_bin_dir()?;
    let port = recipe.port.to_string();
    let run = |program: &str, args: &[&str]| -> Result<String, SetupError> {
        let out = Command::new(bin.join(program))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SetupError::Io {
                action: format!("running {program}"),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(SetupError::Io {
                action: format!("{program} on 127.0.0.1:{port}"),
                source: io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
            })
        }
    };
    let query = format!("SELECT 1 FROM pg_database WHERE datname = '{}'", name.replace('\'', "''"));
    if run("psql", &["-X", "-d", "postgres", "-tAc", &query])?.trim() == "1" {
        return Ok(false);
    }
    run("createdb", &[name])?;
    Ok(true)
}

/// Whether a port on 127.0.0.1 is free to listen on.
pub fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The program listening on a TCP port of this machine, as `name (pid N)`, when the kernel
/// tells (`/proc/net/tcp{,6}`, then the process holding that socket).
pub fn listener_of(port: u16) -> Option<String> {
    let inode = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            // State 0A is LISTEN.
            (local_port == port && *fields.get(3)? == "0A").then(|| fields.get(9).map(|s| s.to_string()))?
        })?;
    let socket = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()).find_map(|process| {
        let pid: u32 = process.file_name().to_str()?.parse().ok()?;
        let holds = std::fs::read_dir(process.path().join("fd"))
            .ok()?
            .filter_map(|fd| fd.ok())
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == socket.as_str()));
        let name = std::fs::read_to_string(process.path().join("comm")).ok()?;
        holds.then(|| format!("{} (pid {pid})", name.trim()))
    })
}
