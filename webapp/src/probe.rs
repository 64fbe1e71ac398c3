//! `webapp healthcheck`: a self-probe for Docker's `HEALTHCHECK` in an image that has
//! no shell and no curl. Plain blocking I/O keeps it tiny and quick.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::HEALTHY;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("talking to {addr}: {source}")]
    Io { addr: SocketAddr, source: std::io::Error },
    #[error("unhealthy answer from {addr}: {status_line:?}, body {body:?}")]
    Unhealthy {
        addr: SocketAddr,
        status_line: String,
        body: String,
    },
}

/// Asks `http://{addr}/health` and succeeds only on a 200 whose body is `healthy`.
pub fn check(addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|source| ProbeError::Connect { addr, source })?;
    let io = |source| ProbeError::Io { addr, source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(io)?;
    let mut response = Vec::with_capacity(256);
    stream.take(64 * 1024).read_to_end(&mut response).map_err(io)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let ok_status = status_line.split_whitespace().nth(1).is_some_and(|code| code == "200");
    if ok_status && body.trim() == HEALTHY {
        Ok(())
    } else {
        Err(ProbeError::Unhealthy {
            addr,
            status_line: status_line.to_owned(),
            body: body.chars().take(200).collect(),
        })
    }
}
