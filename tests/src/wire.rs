//! Round trips counted on the wire: a relay on loopback in front of a real PostgreSQL or Redis
//! that forwards every byte both ways unchanged and records the client's messages as they pass
//! (PostgreSQL: simple queries, statement preparations, executions and syncs; Redis: each
//! command by name). The round-trip tests point the stores at it, so what they count is what
//! the driver sent the server, not what our code believes it sent.
//!
//! Our own code rather than a crate: no maintained crate counts protocol messages on a live
//! connection, and what is needed is a framing reader for each protocol (PostgreSQL's typed
//! messages, Redis's RESP arrays) of a few dozen lines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The protocol a [`WireCounter`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// PostgreSQL's frontend/backend protocol, version 3.
    Postgres,
    /// Redis's RESP.
    Redis,
}

/// One message a client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// PostgreSQL: a simple query (`BEGIN`, `COMMIT`, or any statement sent without
    /// parameters), with its text.
    Query(String),
    /// PostgreSQL: a statement prepared (Parse), with its text.
    Parse(String),
    /// PostgreSQL: a prepared statement executed (Execute), with its text.
    Execute(String),
    /// PostgreSQL: the end of an extended-protocol exchange (Sync): the client waits for the
    /// server's answer.
    Sync,
    /// Redis: a command, its name in capitals (`GET`, `EVALSHA`).
    Command(String),
}

/// One PostgreSQL round trip: what the client sent before it waited for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    /// A prepared statement executed, with its text.
    Statement(String),
    /// A simple query (`BEGIN`, `COMMIT`, `SAVEPOINT ...`), with its text.
    Simple(String),
    /// A statement prepared and nothing executed: the driver's first use of a statement on a
    /// connection.
    Prepare(String),
    /// A Sync alone: the pool checking a connection before handing it out.
    Ping,
}

impl Trip {
    /// The statement's or query's text.
    pub fn text(&self) -> &str {
        match self {
            Trip::Statement(t) | Trip::Simple(t) | Trip::Prepare(t) => t,
            Trip::Ping => "",
        }
    }
}

/// PostgreSQL's messages as the round trips they made, in order.
pub fn trips(messages: &[Message]) -> Vec<Trip> {
    let mut trips = Vec::new();
    let (mut executed, mut prepared) = (None, None);
    for message in messages {
        match message {
            Message::Query(text) => trips.push(Trip::Simple(text.clone())),
            Message::Parse(text) => prepared = Some(text.clone()),
            Message::Execute(text) => executed = Some(text.clone()),
            Message::Sync => trips.push(match (executed.take(), prepared.take()) {
                (Some(text), _) => Trip::Statement(text),
                (None, Some(text)) => Trip::Prepare(text),
                (None, None) => Trip::Ping,
            }),
            Message::Command(_) => {}
        }
    }
    trips
}

/// Redis's commands by name, in order.
pub fn commands(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Command(name) => Some(name.clone()),
            _ => None,
        })
        .collect()
}

/// A relay on `127.0.0.1:{port}` to a server, recording what its clients send.
pub struct WireCounter {
    /// The port clients connect to instead of the server's.
    pub port: u16,
    messages: Arc<Mutex<Vec<Message>>>,
}

impl WireCounter {
    /// Starts relaying connections on a free loopback port to `upstream` (`host:port`).
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(protocol: Protocol, upstream: String) -> WireCounter {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port for the wire counter");
        let port = listener.local_addr().expect("its address").port();
        let messages: Arc<Mutex<Vec<Message>>> = Arc::default();
        let recorded = messages.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, recorded) = (upstream.clone(), recorded.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(protocol, client, server, recorded).await;
                    }
                });
            }
        });
        WireCounter { port, messages }
    }

    /// The messages recorded since the last call, and forgets them.
    pub fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.messages.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// `url` (`scheme://user:password@host:port/...`) with its port replaced by the relay's.
    ///
    /// # Panics
    ///
    /// When `url` does not parse or takes no port.
    pub fn url_for(&self, url: &str) -> String {
        let mut parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        parsed.set_port(Some(self.port)).unwrap_or_else(|()| panic!("{url}: takes no port"));
        parsed.to_string()
    }
}

/// `host:port` of a server's URL.
///
/// # Panics
///
/// When `url` names no host and port.
pub fn address_of(url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let host = parsed.host_str().unwrap_or_else(|| panic!("{url}: no host"));
    let port = parsed.port().unwrap_or_else(|| panic!("{url}: no port"));
    format!("{host}:{port}")
}

/// Forwards both directions until either side closes, reading the client's side.
async fn relay(protocol: Protocol, client: TcpStream, server: TcpStream, recorded: Arc<Mutex<Vec<Message>>>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let answers = tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut reader = Framing::new(protocol);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match client_read.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let messages = reader.feed(&chunk[..n]);
        if !messages.is_empty() {
            recorded.lock().unwrap_or_else(|e| e.into_inner()).extend(messages);
        }
        if server_write.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    let _ = server_write.shutdown().await;
    answers.abort();
}

/// Splits a client's byte stream into messages, across reads.
struct Framing {
    protocol: Protocol,
    buffer: Vec<u8>,
    /// PostgreSQL: the startup message has passed (before it, messages carry no type byte).
    started: bool,
    /// PostgreSQL: the text of each statement this connection prepared, by name (`""` for the
    /// unnamed one).
    prepared: HashMap<String, String>,
    /// PostgreSQL: the text of the statement bound last, which an Execute runs.
    bound: String,
}

impl Framing {
    fn new(protocol: Protocol) -> Framing {
        Framing {
            protocol,
            buffer: Vec::new(),
            started: false,
            prepared: HashMap::new(),
            bound: String::new(),
        }
    }

    /// The messages completed by `bytes`.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.buffer.extend_from_slice(bytes);
        let mut messages = Vec::new();
        loop {
            let taken = match self.protocol {
                Protocol::Postgres => self.postgres_message(&mut messages),
                Protocol::Redis => redis_command(&self.buffer, &mut messages),
            };
            match taken {
                Some(length) => {
                    self.buffer.drain(..length);
                }
                None => return messages,
            }
        }
    }

    /// Reads one PostgreSQL message from the buffer's start: its length, or `None` when it is
    /// not complete yet.
    fn postgres_message(&mut self, messages: &mut Vec<Message>) -> Option<usize> {
        let b = &self.buffer;
        if !self.started {
            // Untyped: an SSL or GSS encryption request (the startup follows), or the startup.
            let length = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
            if b.len() < length {
                return None;
            }
            let code = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            self.started = !matches!(code, 80_877_103 | 80_877_104);
            return Some(length);
        }
        let length = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize + 1;
        if b.len() < length {
            return None;
        }
        // The NUL-terminated strings of the body, from its start.
        let strings = |count: usize| -> Vec<String> {
            b[5..length]
                .split(|&c| c == 0)
                .take(count)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        match b[0] {
            b'Q' => messages.push(Message::Query(strings(1).concat())),
            b'P' => {
                let [name, text]: [String; 2] = strings(2).try_into().unwrap_or_default();
                messages.push(Message::Parse(text.clone()));
                self.prepared.insert(name, text);
            }
            b'B' => {
                // Bind: the portal's name, then the statement's.
                let statement = strings(2).pop().unwrap_or_default();
                self.bound = self.prepared.get(&statement).cloned().unwrap_or(statement);
            }
            b'E' => messages.push(Message::Execute(self.bound.clone())),
            b'S' => messages.push(Message::Sync),
            _ => {}
        }
        Some(length)
    }
}

/// Reads one RESP command (`*N` then N bulk strings) from `b`'s start: its length, or `None`
/// when it is not complete yet.
fn redis_command(b: &[u8], messages: &mut Vec<Message>) -> Option<usize> {
    fn line(b: &[u8], from: usize) -> Option<(usize, usize)> {
        let end = from + b.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(b.get(from + 1..end)?).ok()?.parse().ok()?;
        Some((n, end + 2))
    }
    if b.first()? != &b'*' {
        // Not an array: an inline command, up to its line's end.
        let end = b.windows(2).position(|w| w == b"\r\n")?;
        let name = String::from_utf8_lossy(&b[..end])
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_uppercase();
        messages.push(Message::Command(name));
        return Some(end + 2);
    }
    let (count, mut at) = line(b, 0)?;
    let mut name = None;
    for _ in 0..count {
        let (length, data) = line(b, at)?;
        if b.len() < data + length + 2 {
            return None;
        }
        name.get_or_insert_with(|| String::from_utf8_lossy(&b[data..data + length]).to_uppercase());
        at = data + length + 2;
    }
    messages.push(Message::Command(name.unwrap_or_default()));
    Some(at)
}
