//! Servers started as containers for the tests, through testcontainers: the four images that
//! `scripts/test-images` builds here (or the user's own, named by `DATAFLOW_TEST_IMAGE_*`),
//! each on a free loopback port of the host.
//!
//! Rust runs no destructors for statics, so a container of a test binary would outlive it: a
//! small shell watchdog per container removes it (`docker rm -f -v`) when the test process
//! goes away, whether its tests passed, failed or panicked. The engine is asked through the
//! `docker` command for what testcontainers does not offer (pause, network, the server's
//! pid), with the engine's own address even when testcontainers goes through the version
//! proxy of `docker_api`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testcontainers_modules::postgres::Postgres;
use testcontainers_modules::redis::Redis;
use testcontainers_modules::testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers_modules::testcontainers::runners::SyncRunner;
use testcontainers_modules::testcontainers::{Container, ContainerRequest, GenericImage, Image, ImageExt};

use super::detached::{DEFAULT_ARCADEDB_HTTP_PORT, default_port};
use super::docker_api;
use super::probe;
use super::recipe::ARCADEDB_DATABASE;
use super::{ARCADE_PASSWORD, ServiceKind};

/// How long a container may take to start and become ready (generous for a loaded 2-core
/// machine; the images start in 0.5–6 s).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// The variable that forces a provider: `containers` or `local`.
pub const PROVIDER_ENV: &str = "DATAFLOW_TEST_PROVIDER";

/// How a server is interrupted without being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// Every process of its container frozen (`docker pause`): its port still accepts
    /// connections, and nothing answers ("busy, not down").
    Pause,
    /// Its container cut off the network: every packet in and out dropped, so the clients'
    /// connections stay open and go unanswered, and new ones are never accepted.
    CutOff,
}

impl std::fmt::Display for Interruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Interruption::Pause => "pause",
            Interruption::CutOff => "network cut",
        })
    }
}

/// The Docker engine the containers run on.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Its Unix socket (what the `docker` command and the watchdogs use).
    pub socket: PathBuf,
    /// Its highest API version.
    pub api_version: (u32, u32),
    /// The version proxy's socket, when testcontainers goes through it.
    pub proxy: Option<PathBuf>,
}

static ENGINE: OnceLock<Engine> = OnceLock::new();

/// Asks the Docker engine for a ping: `Ok` with its address and API version when it answers.
pub fn find_engine() -> Result<Engine, String> {
    let socket = docker_api::engine_socket()
        .ok_or_else(|| "DOCKER_HOST names a TCP engine; the harness reaches Docker through a Unix socket".to_owned())?;
    let api_version = docker_api::ping(&socket)?;
    Ok(Engine {
        socket,
        api_version,
        proxy: None,
    })
}

/// Makes `engine` the one the containers run on, in front of its version proxy when it is
/// older than testcontainers' client. Called once, before the first container starts.
pub fn use_engine(mut engine: Engine) -> Result<&'static Engine, String> {
    if docker_api::needs_proxy(engine.api_version) {
        let dir = std::env::temp_dir().join(format!("dataflow-tests-{}-docker", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let proxy = docker_api::start_proxy(engine.socket.clone(), engine.api_version, &dir)?;
        // SAFETY: testcontainers reads DOCKER_HOST each time it makes its client and offers no
        // other way to name the engine. This runs once, inside the harness's one-time set-up,
        // before any container starts; the harness's other threads are waiting for that set-up,
        // and no code of the tests reads the environment through C while it runs.
        unsafe { std::env::set_var("DOCKER_HOST", format!("unix://{}", proxy.display())) };
        engine.proxy = Some(proxy);
    }
    Ok(ENGINE.get_or_init(|| engine))
}

fn engine() -> &'static Engine {
    ENGINE.get().expect("the container provider chose its engine first")
}

/// A `docker` command addressed to the engine itself (not to the version proxy).
fn docker() -> Command {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_HOST", format!("unix://{}", engine().socket.display()));
    cmd
}

/// Runs `docker args...`; its standard output, or an error with what it printed.
fn docker_output(args: &[&str]) -> Result<String, String> {
    output_of(docker().args(args), &format!("docker {}", args.join(" ")))
}

/// Runs `cmd` (described as `what` in errors) with no input; its standard output, trimmed, or
/// an error with what it printed on its standard error.
fn output_of(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("running {what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The image of `kind`: `scripts/test-images --print-names`, which honours
/// `DATAFLOW_TEST_IMAGE_*` and knows the versions the recipes pin.
pub fn image_name(kind: ServiceKind) -> String {
    static NAMES: OnceLock<Result<Vec<(String, String)>, String>> = OnceLock::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-images");
    let names = NAMES.get_or_init(|| {
        let out = output_of(Command::new(script).arg("--print-names"), &format!("{script} --print-names"))?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect())
    });
    let names = names.as_ref().unwrap_or_else(|e| panic!("{e}"));
    let wanted = match kind {
        ServiceKind::Bolt => "graph",
        other => other.name(),
    };
    names
        .iter()
        .find(|(k, _)| k == wanted)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("{script} --print-names named no {wanted} image"))
}

/// `name:tag` split at the tag's colon (a registry's port has one too).
fn split_image(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// The label every container of the harness carries, with the test process's id as its value
/// (`scripts/test` looks for containers left behind by it).
pub const PROCESS_LABEL: &str = "org.dataflow.test-process";

/// Starts `request` with each `(host, container)` port pair mapped, the harness's label and
/// its start timeout.
fn launch<I: Image + 'static>(
    request: impl Into<ContainerRequest<I>>,
    ports: impl IntoIterator<Item = (u16, u16)>,
) -> Result<Box<dyn Handle>, String> {
    let mut request = request.into().with_label(PROCESS_LABEL, std::process::id().to_string());
    for (host, container) in ports {
        request = request.with_mapped_port(host, container.tcp());
    }
    request
        .with_startup_timeout(START_TIMEOUT)
        .start()
        .map(|c| Box::new(c) as Box<dyn Handle>)
        .map_err(|e| e.to_string())
}

/// What keeps a container of any image: testcontainers' handle, whose stop and start the
/// harness uses.
trait Handle: Send {
    fn id(&self) -> &str;
    fn stop(&self) -> Result<(), String>;
    fn start(&self) -> Result<(), String>;
}

impl<I: Image> Handle for Container<I> {
    fn id(&self) -> &str {
        Container::id(self)
    }

    fn stop(&self) -> Result<(), String> {
        Container::stop(self).map_err(|e| e.to_string())
    }

    fn start(&self) -> Result<(), String> {
        Container::start(self).map_err(|e| e.to_string())
    }
}

/// A server in a container, on fixed host ports so that it keeps them across stop and start.
pub struct ContainerServer {
    /// Which server.
    pub kind: ServiceKind,
    /// The image it runs.
    pub image: String,
    /// The host port clients use (Bolt's for ArcadeDB).
    pub port: u16,
    /// ArcadeDB's HTTP port on the host.
    pub http_port: Option<u16>,
    handle: Box<dyn Handle>,
    /// Removes the container when the test process ends; kept so that it is not reaped early.
    _watchdog: Child,
}

/// The watchdog: waits while the test process lives, then removes the container.
const WATCHDOG: &str = r#"
parent=$1; id=$2
while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
docker rm -f -v "$id" >/dev/null 2>&1
"#;

impl ContainerServer {
    /// Starts a container of `kind` from its image and waits until it serves its protocol;
    /// panics with the container's log when it does not.
    pub fn start(kind: ServiceKind) -> ContainerServer {
        let image = image_name(kind);
        if let Err(e) = docker_output(&["image", "inspect", "--format", "{{.Id}}", &image]) {
            panic!(
                "the {} image {image} is not on this Docker engine ({e}); build it with scripts/test-images, \
                 or name another with DATAFLOW_TEST_IMAGE_{}",
                kind.product(),
                match kind {
                    ServiceKind::Bolt => "GRAPH".to_owned(),
                    other => other.name().to_uppercase(),
                }
            );
        }
        let (name, tag) = split_image(&image);
        let port = probe::free_port();
        let http_port = (kind == ServiceKind::Bolt).then(probe::free_port);
        let started = Instant::now();
        // Inside its container each server listens on its usual ports.
        let ports = [(port, default_port(kind))]
            .into_iter()
            .chain(http_port.map(|p| (p, DEFAULT_ARCADEDB_HTTP_PORT)));
        let handle = match kind {
            ServiceKind::Postgres => launch(
                Postgres::default().with_host_auth().with_name(name).with_tag(tag).with_cmd([
                    "-c",
                    "max_connections=300",
                    "-c",
                    "shared_buffers=128MB",
                ]),
                ports,
            ),
            ServiceKind::Redis => launch(
                Redis::default()
                    .with_name(name)
                    .with_tag(tag)
                    .with_cmd(["--save", "", "--appendonly", "yes"]),
                ports,
            ),
            ServiceKind::Chroma => launch(
                GenericImage::new(name, tag)
                    .with_exposed_port(8000.tcp())
                    .with_wait_for(WaitFor::message_on_stdout("Frontend server listening")),
                ports,
            ),
            ServiceKind::Bolt => launch(
                GenericImage::new(name, tag)
                    .with_exposed_port(7687.tcp())
                    .with_exposed_port(2480.tcp())
                    .with_wait_for(WaitFor::message_on_stderr("ArcadeDB Server started"))
                    .with_env_var("ARCADEDB_ROOT_PASSWORD", ARCADE_PASSWORD)
                    .with_env_var("ARCADEDB_DATABASE", ARCADEDB_DATABASE),
                ports,
            ),
        };
        let handle = handle.unwrap_or_else(|e| panic!("starting the {} container from {image}: {e}", kind.product()));
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("dataflow-container-watchdog")
            .arg(std::process::id().to_string())
            .arg(handle.id())
            .env("DOCKER_HOST", format!("unix://{}", engine().socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the watchdog of the {} container: {e}", kind.product()));
        let server = ContainerServer {
            kind,
            image,
            port,
            http_port,
            handle,
            _watchdog: watchdog,
        };
        server.wait_ready(started);
        server
    }

    /// The container's id.
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    /// The URL clients connect to (PostgreSQL: database `postgres` as user `postgres`, trusted
    /// as on the local servers).
    pub fn url(&self) -> String {
        super::recipe::url_of(self.kind, self.port)
    }

    /// Whether the server answers its own protocol on the host port.
    fn ready(&self) -> bool {
        match self.kind {
            ServiceKind::Postgres => probe::postgres_ready(self.port, "postgres", "postgres"),
            ServiceKind::Redis => probe::redis_pong(self.port),
            ServiceKind::Chroma => probe::http_status(self.port, "/api/v2/heartbeat") == Some(200),
            ServiceKind::Bolt => {
                self.http_port
                    .is_some_and(|p| matches!(probe::http_status(p, "/api/v1/ready"), Some(200..=299)))
                    && probe::bolt_handshake(self.port).is_some()
            }
        }
    }

    /// Waits until [`ContainerServer::ready`]; panics with the container's log after
    /// [`START_TIMEOUT`].
    fn wait_ready(&self, started: Instant) {
        while !self.ready() {
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "the {} container {} ({}) did not answer on 127.0.0.1:{} within {START_TIMEOUT:?}; its log:\n{}",
                    self.kind.product(),
                    self.id(),
                    self.image,
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        announce!(
            "dataflow-tests harness: {} ready on 127.0.0.1:{} in {:?} (container {} from {})",
            self.kind.name(),
            self.port,
            started.elapsed(),
            &self.id()[..12.min(self.id().len())],
            self.image
        );
    }

    fn log_tail(&self) -> String {
        docker_output(&["logs", "--tail", "40", self.id()]).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// Stops the container (its server's shutdown signal, as `docker stop` sends it); its data
    /// and ports stay for [`ContainerServer::restart`].
    pub fn stop(&mut self) {
        self.handle
            .stop()
            .unwrap_or_else(|e| panic!("stopping the {} container: {e}", self.kind.product()));
        announce!("dataflow-tests harness: {} stopped (container)", self.kind.name());
    }

    /// Starts the stopped container again, same ports and data, and waits until it is ready.
    pub fn restart(&mut self) {
        let started = Instant::now();
        self.handle
            .start()
            .unwrap_or_else(|e| panic!("starting the {} container again: {e}", self.kind.product()));
        self.wait_ready(started);
    }

    /// Interrupts the server without stopping it; see [`Interruption`].
    pub fn interrupt(&self, how: Interruption) {
        match how {
            Interruption::Pause => docker_output(&["pause", self.id()]).map(drop),
            Interruption::CutOff => self.packet_filter("-I"),
        }
        .unwrap_or_else(|e| panic!("{how} of the {} container: {e}", self.kind.product()));
        announce!("dataflow-tests harness: {} interrupted: {how}", self.kind.name());
    }

    /// Ends an interruption: the server serves again.
    pub fn resume(&self, how: Interruption) {
        match how {
            Interruption::Pause => docker_output(&["unpause", self.id()]).map(drop),
            Interruption::CutOff => self.packet_filter("-D"),
        }
        .unwrap_or_else(|e| panic!("ending the {how} of the {} container: {e}", self.kind.product()));
        announce!("dataflow-tests harness: {} serves again after its {how}", self.kind.name());
    }

    /// Inserts (`-I`) or deletes (`-D`) rules that drop every packet in and out of the
    /// container's network namespace, with the host's `iptables` run inside it by `nsenter`.
    /// Docker's own `network disconnect` would not do: its port proxy closes the clients'
    /// connections, which is a stop as the client sees it, not a cut.
    fn packet_filter(&self, action: &str) -> Result<(), String> {
        let pid = self.pid().ok_or("the container is not running")?.to_string();
        for chain in ["INPUT", "OUTPUT"] {
            let args = ["--target", &pid, "--net", "iptables", action, chain, "-j", "DROP"];
            output_of(
                Command::new("nsenter").args(args),
                &format!("nsenter {} (it needs root, util-linux and iptables)", args.join(" ")),
            )?;
        }
        Ok(())
    }

    /// The server's own process as the host sees it (the container's first process), for a
    /// caller that reads its CPU in `/proc`; `None` when it is not running.
    pub fn pid(&self) -> Option<u32> {
        let pid: u32 = docker_output(&["inspect", "--format", "{{.State.Pid}}", self.id()])
            .ok()?
            .parse()
            .ok()?;
        (pid != 0).then_some(pid)
    }
}
