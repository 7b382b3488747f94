//! Health probes: is a server on a loopback port ready to serve?

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// A free TCP port on 127.0.0.1 (bound and released; a race with another process is unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn connect(port: u16) -> Option<TcpStream> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(stream)
}

/// Something accepts connections on `port`.
pub fn tcp_open(port: u16) -> bool {
    connect(port).is_some()
}

/// The HTTP status of `GET path` on `port`, if the server answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream = connect(port)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).ok()?;
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Redis answers `PING` with `PONG`.
pub fn redis_pong(port: u16) -> bool {
    let Some(mut stream) = connect(port) else { return false };
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 16];
    matches!(stream.read(&mut reply), Ok(n) if reply[..n].starts_with(b"+PONG"))
}

/// The Bolt protocol version the server agrees to (major, minor) when offered 4.4 down to 4.1,
/// or `None` when it does not speak Bolt.
pub fn bolt_handshake(port: u16) -> Option<(u8, u8)> {
    let mut stream = connect(port)?;
    let mut hello = vec![0x60, 0x60, 0xB0, 0x17];
    for minor in [4u8, 3, 2, 1] {
        hello.extend_from_slice(&[0, 0, minor, 4]);
    }
    stream.write_all(&hello).ok()?;
    let mut agreed = [0u8; 4];
    stream.read_exact(&mut agreed).ok()?;
    (agreed != [0; 4]).then_some((agreed[3], agreed[2]))
}

/// The port of a `scheme://host:port[/path]` URL.
pub fn port_of(url: &str) -> u16 {
    let authority = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or_default();
    authority
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {url}"))
}

/// PostgreSQL accepts `user` into `database` without a password (trust) and is ready for
/// queries: a whole startup exchange of its wire protocol, which a server still starting up or
/// recovering refuses.
pub fn postgres_ready(port: u16, user: &str, database: &str) -> bool {
    let Some(mut stream) = connect(port) else { return false };
    let mut body = Vec::new();
    body.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for (key, value) in [("user", user), ("database", database)] {
        body.extend_from_slice(key.as_bytes());
        body.push(0);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut startup = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&body);
    if stream.write_all(&startup).is_err() {
        return false;
    }
    // Messages until ReadyForQuery ('Z'); an ErrorResponse ('E') or an authentication request
    // other than "ok" ('R' with a non-zero code) means not ready for us.
    loop {
        let mut head = [0u8; 5];
        if stream.read_exact(&mut head).is_err() {
            return false;
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut rest = vec![0u8; len.saturating_sub(4)];
        if stream.read_exact(&mut rest).is_err() {
            return false;
        }
        match head[0] {
            b'Z' => return true,
            b'E' => return false,
            b'R' if rest.get(..4) != Some(&[0, 0, 0, 0]) => return false,
            _ => {}
        }
    }
}
