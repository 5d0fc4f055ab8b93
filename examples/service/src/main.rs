//! An example service guest: a small HTTP/1.1 server for `wasm32-wasip1`, written with the
//! `wasmedge_wasi_socket` crate as any Rust program with sockets would be.
//!
//! `service [PORT]` listens on PORT (8000 by default) and answers every request with `hits N` — how many
//! requests it has answered so far, a counter that lives in the guest's memory — and `GET /bye` by ending
//! with status 0. In a Stasis sandbox the port is in the sandbox's own virtual network: nothing is bound on
//! the host, and the host reaches it with `Sandbox::connect` (or, through the server, by the sandbox's
//! host name). Paused while it waits in `accept`, the service is saved with its counter and continues
//! counting after the resume (`examples/service.rs` shows it).

use std::io::{Read, Write};

use wasmedge_wasi_socket::{Shutdown, TcpListener, TcpStream};

/// The longest request head read (request line and headers): a bound, so a client sending an endless
/// header cannot make the service grow its memory.
const MAX_HEAD: usize = 16 * 1024;

fn main() {
    let port = match std::env::args().nth(1).map(|p| p.parse::<u16>()) {
        None => 8000,
        Some(Ok(port)) => port,
        Some(Err(_)) => {
            eprintln!("usage: service [PORT]");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", port), false) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("service: cannot listen on port {port}: {error}");
            std::process::exit(1);
        }
    };
    eprintln!("service: listening on port {port}");
    let mut hits: u64 = 0;
    loop {
        let mut stream = match listener.accept(false) {
            Ok((stream, _)) => stream,
            Err(error) => {
                eprintln!("service: accept failed: {error}");
                continue;
            }
        };
        let Some(target) = read_target(&mut stream) else {
            let _ = respond(&mut stream, "400 Bad Request", "bad request\n");
            continue;
        };
        hits += 1;
        if target == "/bye" {
            let _ = respond(&mut stream, "200 OK", "bye\n");
            eprintln!("service: bye after {hits} requests");
            return;
        }
        if let Err(error) = respond(&mut stream, "200 OK", &format!("hits {hits}\n")) {
            // The client went away before the answer: the next one is served all the same.
            eprintln!("service: answering failed: {error}");
        }
    }
}

/// Reads a request head and returns its target (`/path`), or `None` for something that is not one.
fn read_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() + n > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next()?;
    let mut words = std::str::from_utf8(line).ok()?.split(' ');
    let (_method, target) = (words.next()?, words.next()?);
    Some(target.to_owned())
}

/// Writes a whole HTTP/1.1 response and closes the connection.
fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()?;
    stream.shutdown(Shutdown::Both)
}
