//! The Docker engine as testcontainers reaches it: directly, or through a small proxy that
//! speaks the engine's API version when the engine is older than the client.
//!
//! testcontainers (through bollard) asks for one fixed API version in every request path
//! (`/v1.52/containers/create` with bollard 0.20, which testcontainers 0.27 uses) and does not negotiate. An engine older than that
//! refuses every call ("client version 1.52 is too new. Maximum supported API version is
//! 1.41": Debian 12's `docker.io` 20.10). The calls the harness makes (create, start, stop,
//! inspect, logs, remove) mean the same in both versions, so the proxy forwards each request to
//! the engine's socket with the version in its path replaced by the engine's, and streams the
//! answer back. It serves a Unix socket of this process on a thread of its own (the tests'
//! runtimes come and go with each test). Connection upgrades (`attach`, `exec` with a TTY),
//! which the harness does not use, are not forwarded. Our own code, not a crate: no maintained
//! crate does this rewrite, and it is forty lines of hyper.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1 as server_http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};

/// The engine's socket when `DOCKER_HOST` does not name another.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// The API version testcontainers' client asks for (bollard's `API_DEFAULT_VERSION`); an
/// engine whose highest version is lower needs the proxy.
const CLIENT_API_VERSION: (u32, u32) = (1, 52);

/// The engine's Unix socket: `DOCKER_HOST` when it is a `unix://` URL, else the default.
/// `None` when `DOCKER_HOST` names a TCP or TLS engine (then the harness does not proxy).
pub fn engine_socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(host) if !host.is_empty() => host.strip_prefix("unix://").map(PathBuf::from),
        _ => Some(PathBuf::from(DEFAULT_SOCKET)),
    }
}

/// Asks the engine at `socket` for `/_ping` and returns its highest API version (the
/// `Api-Version` header), or why it did not answer.
pub fn ping(socket: &Path) -> Result<(u32, u32), String> {
    let mut stream = StdUnixStream::connect(socket).map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("asking {} for /_ping: {e}", socket.display()))?;
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .map_err(|e| format!("reading the answer to /_ping from {}: {e}", socket.display()))?;
    let status_ok = answer.lines().next().is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return Err(format!(
            "the engine at {} answered /_ping with {:?}",
            socket.display(),
            answer.lines().next().unwrap_or_default()
        ));
    }
    answer
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("api-version").then(|| parse_version(value.trim()))?
        })
        .ok_or_else(|| format!("the engine at {} did not say its API version", socket.display()))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Whether an engine whose highest API version is `engine` refuses testcontainers' requests.
pub fn needs_proxy(engine: (u32, u32)) -> bool {
    engine < CLIENT_API_VERSION
}

/// Starts the proxy to the engine at `engine` (speaking `version`) on a new socket in `dir`,
/// and returns that socket's path. It serves until the process ends.
pub fn start_proxy(engine: PathBuf, version: (u32, u32), dir: &Path) -> Result<PathBuf, String> {
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("a runtime for the Docker API proxy: {e}"))?;
    let listener = {
        let _entered = runtime.enter();
        UnixListener::bind(&socket).map_err(|e| format!("listening on {}: {e}", socket.display()))?
    };
    let prefix = format!("/v{}.{}/", version.0, version.1);
    std::thread::Builder::new()
        .name("docker-api-proxy".into())
        .spawn(move || runtime.block_on(serve(listener, engine, prefix)))
        .map_err(|e| format!("starting the Docker API proxy: {e}"))?;
    Ok(socket)
}

async fn serve(listener: UnixListener, engine: PathBuf, prefix: String) {
    loop {
        let Ok((client, _)) = listener.accept().await else { continue };
        let (engine, prefix) = (engine.clone(), prefix.clone());
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(request, engine.clone(), prefix.clone()));
            // A client that hangs up mid-answer is not an error of the proxy's.
            let _ = server_http1::Builder::new().serve_connection(TokioIo::new(client), service).await;
        });
    }
}

/// Sends `request` to the engine with its API version replaced, over a connection of its own.
async fn forward(mut request: Request<Incoming>, engine: PathBuf, prefix: String) -> Result<Response<Incoming>, String> {
    let uri = request.uri();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let rewritten = match path_and_query.strip_prefix("/v").and_then(|rest| rest.split_once('/')) {
        Some((version, rest)) if parse_version(version).is_some() => format!("{prefix}{rest}"),
        _ => path_and_query.to_owned(),
    };
    *request.uri_mut() = rewritten.parse::<Uri>().map_err(|e| format!("rewriting {path_and_query}: {e}"))?;
    let upstream = UnixStream::connect(&engine)
        .await
        .map_err(|e| format!("connecting to the Docker engine at {}: {e}", engine.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(upstream))
        .await
        .map_err(|e| format!("speaking HTTP to the Docker engine: {e}"))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("forwarding {rewritten} to the Docker engine: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_as_numbers() {
        assert_eq!(parse_version("1.41"), Some((1, 41)));
        assert!(needs_proxy((1, 41)));
        assert!(!needs_proxy((1, 52)));
        assert!((1, 9) < (1, 41), "1.9 is older than 1.41");
    }
}
