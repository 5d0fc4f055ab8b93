//! A guest that uses sockets through the `wasmedge_wasi_socket` crate, for the virtual network's tests:
//!
//! - `net echo PORT`: listens on PORT and, one connection at a time, sends back what it reads until the
//!   peer ends; it prints `served N` to stderr after each connection, and never ends;
//! - `net http PORT`: listens on PORT and answers each request (read up to its blank line) with an
//!   HTTP/1.0 response whose body names the request line;
//! - `net upgrade PORT`: listens on PORT and, for each connection, reads a request up to its blank line,
//!   answers `101 Switching Protocols` and then sends back what it reads until the peer ends;
//! - `net idle PORT`: listens on PORT, accepts one connection and never reads from it;
//! - `net flood PORT`: accepts one connection and writes into it until a write fails, printing `sent N`
//!   to stderr once 64 KiB went and the errno at the end;
//! - `net backlog PORT N`: listens on PORT with a backlog of N and never accepts;
//! - `net connect HOST PORT`: connects to HOST:PORT, sends `ping`, prints what comes back, or
//!   `error N` (the errno) and exits 1;
//! - `net self PORT HOST`: listens on PORT, connects to HOST:PORT (its own listener), sends through the
//!   connection both ways and prints what each side read;
//! - `net nonblock PORT`: listens on PORT without blocking; prints the error an accept with nothing
//!   waiting gives and what a poll for the listener's readiness does;
//! - `net poll PORT`: listens on PORT without blocking, waits in `poll_oneoff` for a connection, then
//!   for bytes on it, and sends them back;
//! - `net listeners N`: listens on N ports (from 20000) until one fails, and prints how many and the errno;
//! - `net resolve NAME`: prints the addresses `sock_getaddrinfo` gives for NAME;
//! - `net options`: prints socket options set and read back, and the errnos of bad uses.
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use wasmedge_wasi_socket::socket::{
    AddressFamily, Socket, SocketOptLevel, SocketOptName, SocketType, WasiAddress,
};
use wasmedge_wasi_socket::{Shutdown, TcpListener, TcpStream};

// The crate reads these addresses from a buffer it declares immutable, which the optimizer may read as
// the zeros it started with; the program asks the host itself, into a buffer it may write.
#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn sock_getlocaladdr(fd: u32, addr: *mut WasiAddress, kind: *mut u32, port: *mut u32) -> u32;
    fn sock_getpeeraddr(fd: u32, addr: *mut WasiAddress, kind: *mut u32, port: *mut u32) -> u32;
}

/// The local (or peer) address of socket `fd`, as the host gives it.
fn address(fd: &impl AsRawFd, peer: bool) -> Result<SocketAddr, u32> {
    let mut buf = [0u8; 16];
    let mut addr = WasiAddress {
        buf: buf.as_mut_ptr(),
        size: buf.len(),
    };
    let (mut kind, mut port) = (0u32, 0u32);
    let fd = fd.as_raw_fd() as u32;
    // SAFETY: every pointer is to a live local of the size the ABI says.
    let errno = unsafe {
        if peer {
            sock_getpeeraddr(fd, &mut addr, &mut kind, &mut port)
        } else {
            sock_getlocaladdr(fd, &mut addr, &mut kind, &mut port)
        }
    };
    if errno != 0 {
        return Err(errno);
    }
    let buf = std::hint::black_box(buf);
    let ip = match kind {
        4 => IpAddr::V4(Ipv4Addr::new(buf[0], buf[1], buf[2], buf[3])),
        _ => IpAddr::V6(Ipv6Addr::from(buf)),
    };
    Ok(SocketAddr::new(ip, port as u16))
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn listen(port: u16) -> TcpListener {
    TcpListener::bind(("0.0.0.0", port), false).unwrap_or_else(|e| {
        eprintln!("bind {port}: error {}", errno(&e));
        std::process::exit(2)
    })
}

fn echo(port: u16) {
    let listener = listen(port);
    loop {
        let (mut stream, _) = match listener.accept(false) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept: error {}", errno(&e));
                continue;
            }
        };
        let mut served = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    served += n;
                }
                Err(e) => {
                    eprintln!("read: error {}", errno(&e));
                    break;
                }
            }
        }
        eprintln!("served {served}");
    }
}

fn http(port: u16) {
    let listener = listen(port);
    loop {
        let Ok((mut stream, _)) = listener.accept(false) else {
            continue;
        };
        let peer = address(&stream, true).unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&request);
        let line = text.lines().next().unwrap_or("");
        let body = format!("hello from port {port}: {line} (peer {})\n", peer.ip());
        let response = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn upgrade(port: u16) {
    let listener = listen(port);
    loop {
        let Ok((mut stream, _)) = listener.accept(false) else {
            continue;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
        if stream.write_all(head).is_err() {
            continue;
        }
        // Bytes that came with the head belong to the new protocol.
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n")
            && stream.write_all(&request[end + 4..]).is_err()
        {
            continue;
        }
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}

fn idle(port: u16) {
    let listener = listen(port);
    let _kept = listener.accept(false);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn flood(port: u16) {
    let listener = listen(port);
    let (mut stream, _) = listener.accept(false).expect("accept");
    let chunk = [b'x'; 8192];
    let mut sent = 0usize;
    loop {
        match stream.write(&chunk) {
            Ok(n) => {
                sent += n;
                if sent >= 64 * 1024 && sent - n < 64 * 1024 {
                    eprintln!("sent {sent}");
                }
            }
            Err(e) => {
                eprintln!("flood ended: error {}", errno(&e));
                return;
            }
        }
    }
}

fn backlog(port: u16, n: i32) {
    let socket = Socket::new(AddressFamily::Inet4, SocketType::Stream).expect("sock_open");
    socket
        .bind(&SocketAddr::from(([0, 0, 0, 0], port)))
        .expect("bind");
    socket.listen(n).expect("listen");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn connect(host: &str, port: u16) {
    match TcpStream::connect((host, port)) {
        Ok(mut stream) => {
            stream.write_all(b"ping").expect("send");
            let _ = stream.shutdown(Shutdown::Write);
            let mut got = String::new();
            let _ = stream.read_to_string(&mut got);
            println!("connected, got {got:?}");
        }
        Err(e) => {
            println!("error {}", errno(&e));
            std::process::exit(1);
        }
    }
}

fn connect_self(port: u16, host: &str) {
    let listener = listen(port);
    let mut client = match TcpStream::connect((host, port)) {
        Ok(s) => s,
        Err(e) => {
            println!("connect: error {}", errno(&e));
            std::process::exit(1);
        }
    };
    let (mut server, _) = listener.accept(false).expect("accept");
    let peer = address(&server, true).expect("the server's peer");
    client.write_all(b"to server").expect("client send");
    let mut buf = [0u8; 64];
    let n = server.read(&mut buf).expect("server read");
    println!(
        "server read {:?} from {}",
        String::from_utf8_lossy(&buf[..n]),
        peer.ip()
    );
    server.write_all(b"to client").expect("server send");
    drop(server);
    let mut got = String::new();
    client.read_to_string(&mut got).expect("client read");
    println!("client read {got:?}");
    let local = address(&client, false).expect("the client's address");
    println!(
        "client local {} peer {}, server sees it at port {}",
        local.ip(),
        address(&client, true).expect("the client's peer"),
        peer.port() == local.port()
    );
}

fn nonblock(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port), true).expect("bind");
    match listener.accept(false) {
        Ok(_) => println!("accepted?"),
        Err(e) => println!("accept: error {}", errno(&e)),
    }
    println!("listening {:?}", address(&listener, false));
}

/// Waits for `fd` to be readable with `poll_oneoff` (at most 30 s), and says how that went.
fn poll_readable(fd: &impl AsRawFd, what: &str) {
    use wasmedge_wasi_socket::poll::{EventType, Subscription, poll};
    let timeout = std::time::SystemTime::now() + std::time::Duration::from_secs(30);
    match poll(&[Subscription::io(1, fd, true, false, Some(timeout))]) {
        Ok(events) => {
            for event in events {
                match event.event_type {
                    EventType::Read => eprintln!("{what} readable"),
                    EventType::Timeout => eprintln!("{what} timed out"),
                    EventType::Write => eprintln!("{what} writable"),
                    EventType::Error(e) => eprintln!("{what}: error {}", errno(&e)),
                }
            }
        }
        Err(e) => eprintln!("poll: error {}", errno(&e)),
    }
}

fn poll_once(port: u16) {
    let listener = TcpListener::bind(("0.0.0.0", port), true).expect("bind");
    eprintln!("polling");
    poll_readable(&listener, "listener");
    let (mut stream, _) = listener.accept(true).expect("accept after a readable poll");
    poll_readable(&stream, "stream");
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).expect("read after a readable poll");
    stream.write_all(&buf[..n]).expect("send");
    let _ = stream.shutdown(Shutdown::Write);
    eprintln!("answered {n}");
}

fn listeners(n: u16) {
    let mut held = Vec::new();
    for i in 0..n {
        match TcpListener::bind(("0.0.0.0", 20000 + i), false) {
            Ok(l) => held.push(l),
            Err(e) => {
                println!("listening on {} then error {}", held.len(), errno(&e));
                return;
            }
        }
    }
    // Binding a port taken is refused too.
    match TcpListener::bind(("0.0.0.0", 20000), false) {
        Ok(_) => println!("listening on {} twice?", held.len()),
        Err(e) => println!("listening on {}; again: error {}", held.len(), errno(&e)),
    }
}

fn resolve(name: &str) {
    match wasmedge_wasi_socket::nslookup(name, "http") {
        Ok(addrs) => {
            let shown: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            println!("{}", shown.join(" "));
        }
        Err(e) => println!("error {}", errno(&e)),
    }
}

fn options() {
    let socket = Socket::new(AddressFamily::Inet4, SocketType::Stream).expect("sock_open");
    println!("reuse before {}", socket.reuse_address().expect("get"));
    socket
        .setsockopt(SocketOptLevel::SolSocket, SocketOptName::SoReuseaddr, 1i32)
        .expect("set");
    println!("reuse after {}", socket.reuse_address().expect("get"));
    socket
        .set_recv_timeout(Some(std::time::Duration::from_millis(1500)))
        .expect("set timeout");
    println!(
        "timeout {:?}",
        socket.get_recv_timeout().expect("get timeout")
    );
    println!("listener {}", socket.is_listener().expect("acceptconn"));
    println!("error {:?}", socket.take_error().map_err(|e| errno(&e)));
    println!("nonblocking {}", socket.nonblocking().expect("fcntl"));
    socket.set_nonblocking(true).expect("set nonblocking");
    println!("nonblocking {}", socket.nonblocking().expect("fcntl"));
    let mut buf = [0u8; 4];
    println!(
        "recv unconnected: error {:?}",
        socket.recv(&mut buf).map_err(|e| errno(&e))
    );
    println!("peer unconnected: error {:?}", address(&socket, true));
    println!("local unbound {:?}", address(&socket, false));
    println!(
        "udp: error {:?}",
        Socket::new(AddressFamily::Inet4, SocketType::Datagram).map_err(|e| errno(&e))
    );
    println!(
        "bind elsewhere: error {:?}",
        socket
            .bind(&SocketAddr::from(([8, 8, 8, 8], 80)))
            .map_err(|e| errno(&e))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<u16>().unwrap_or(0);
    match arg(1) {
        "echo" => echo(num(2)),
        "http" => http(num(2)),
        "upgrade" => upgrade(num(2)),
        "idle" => idle(num(2)),
        "flood" => flood(num(2)),
        "backlog" => backlog(num(2), i32::from(num(3))),
        "connect" => connect(arg(2), num(3)),
        "self" => connect_self(num(2), arg(3)),
        "nonblock" => nonblock(num(2)),
        "poll" => poll_once(num(2)),
        "listeners" => listeners(num(2)),
        "resolve" => resolve(arg(2)),
        "options" => options(),
        other => {
            eprintln!("unknown command {other:?}");
            std::process::exit(2);
        }
    }
}
