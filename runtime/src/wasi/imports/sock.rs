//! The socket calls: preview 1's (`sock_accept`, `sock_recv`, `sock_send`, `sock_shutdown`) and the
//! WasmEdge socket extension that the `wasmedge_wasi_socket` crate (0.5) calls — `sock_open`, `sock_bind`,
//! `sock_listen`, `sock_connect`, `sock_getlocaladdr`, `sock_getpeeraddr`, `sock_getsockopt`,
//! `sock_setsockopt`, `sock_getaddrinfo` — over the sandbox's virtual network ([`crate::wasi::socket`]).
//!
//! Both families name their accept `sock_accept`, with different shapes: preview 1's
//! `(fd, flags, out_fd)` and WasmEdge's `(fd, out_fd)`. One linker cannot hold both under one name, so
//! [`add_to_linker`](super::add_to_linker) registers preview 1's and [`add_wasmedge_accept`] shadows it
//! in a second linker, picked for a module whose import has WasmEdge's type.
//!
//! ABI details, as the crate lays them out in wasm32 memory: an address is `{ buf: u32, size: u32 }`
//! pointing at 4 (IPv4) or 16 (IPv6) address bytes, the port passed apart; `sock_getaddrinfo` fills a
//! guest-made chain of `addrinfo { flags: u16, family: u8, socktype: u8, protocol: u8, addrlen: u32 @8,
//! addr: u32 @12, canonname: u32 @16, canonnamelen: u32 @20, next: u32 @24 }`, each `addr` pointing at
//! `sockaddr { family: u8, sa_data_len: u32 @4, sa_data: u32 @8 }` whose data is the port (big-endian)
//! then the address bytes. Nothing past a length the guest gave is written.
//!
//! Datagram sockets are not supported (`sock_open` refuses them), so `sock_send_to`/`sock_recv_from`
//! answer `ENOTSUP` for any socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};

use wasmtime::{Caller, Linker};

use super::{Getter, Ran, run, run_unwind_point, u};
use crate::wasi::MODULE;
use crate::wasi::WasiCtx;
use crate::wasi::ctx::Handle;
use crate::wasi::errno::{Errno, GuestResult};
use crate::wasi::memory::GuestMemory;
use crate::wasi::socket::{self, OptValue};

/// `riflags`: leave the bytes there.
const RECV_PEEK: u16 = 1;
/// `riflags`: wait until the buffers are full.
const RECV_WAITALL: u16 = 2;
/// Longest host name `sock_getaddrinfo` takes (DNS's bound), and service name.
const MAX_NODE: u32 = 256;
const MAX_SERVICE: u32 = 64;
/// Most results `sock_getaddrinfo` writes, whatever room the guest offers.
const MAX_ADDRINFO: u32 = 16;
/// Largest option value `sock_setsockopt` reads.
const MAX_OPTION: u32 = 16;

pub(super) fn add<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "sock_accept",
        move |mut c: Caller<'_, T>, fd: i32, flags: i32, out: i32| {
            accept(&mut c, get, fd, flags as u16, out)
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv",
        move |mut c: Caller<'_, T>,
              fd: i32,
              iovs: i32,
              n: i32,
              flags: i32,
              out_len: i32,
              out_flags: i32| {
            run_unwind_point(&mut c, get, "sock_recv", |m, ctx| {
                let flags = flags as u16;
                match socket::recv(
                    m,
                    ctx,
                    u(fd),
                    u(iovs),
                    u(n),
                    flags & RECV_PEEK != 0,
                    flags & RECV_WAITALL != 0,
                )? {
                    Some(got) => {
                        m.write_u32(u(out_len), got)?;
                        // `roflags` is a u16 in preview 1 (the crate reads a zeroed usize): two bytes
                        // serve both without writing past the smaller.
                        m.write(u(out_flags), &0u16.to_le_bytes())?;
                        Ok(Ran::Done)
                    }
                    None => Ok(Ran::Suspended),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send",
        move |mut c: Caller<'_, T>, fd: i32, iovs: i32, n: i32, _flags: i32, out: i32| {
            run_unwind_point(&mut c, get, "sock_send", |m, ctx| {
                match socket::send(m, ctx, u(fd), u(iovs), u(n))? {
                    Some(sent) => m.write_u32(u(out), sent).map(|()| Ran::Done),
                    None => Ok(Ran::Suspended),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_shutdown",
        move |mut c: Caller<'_, T>, fd: i32, how: i32| {
            run(&mut c, get, |_, ctx| socket::shutdown(ctx, u(fd), u(how)))
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_open",
        move |mut c: Caller<'_, T>, af: i32, ty: i32, out: i32| {
            run(&mut c, get, |m, ctx| {
                // Checked first, so a bad pointer opens nothing.
                m.slice(u(out), 4)?;
                let fd = socket::open(ctx, u(af), u(ty))?;
                m.write_u32(u(out), fd)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_bind",
        move |mut c: Caller<'_, T>, fd: i32, addr: i32, port: i32| {
            run(&mut c, get, |m, ctx| {
                let addr = read_addr(m, u(addr), u(port))?;
                socket::bind(ctx, u(fd), addr)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_listen",
        move |mut c: Caller<'_, T>, fd: i32, backlog: i32| {
            run(&mut c, get, |_, ctx| socket::listen(ctx, u(fd), u(backlog)))
        },
    )?;
    // An unwind point: an outbound connect waits for the remote host.
    linker.func_wrap(
        MODULE,
        "sock_connect",
        move |mut c: Caller<'_, T>, fd: i32, addr: i32, port: i32| {
            run_unwind_point(&mut c, get, "sock_connect", |m, ctx| {
                let addr = read_addr(m, u(addr), u(port))?;
                match socket::connect(ctx, u(fd), addr)? {
                    Some(()) => Ok(Ran::Done),
                    None => Ok(Ran::Suspended),
                }
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getlocaladdr",
        move |mut c: Caller<'_, T>, fd: i32, addr: i32, kind: i32, port: i32| {
            run(&mut c, get, |m, ctx| {
                let local = socket::local_addr(ctx, u(fd))?;
                write_addr(m, local, u(addr), u(kind), u(port))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getpeeraddr",
        move |mut c: Caller<'_, T>, fd: i32, addr: i32, kind: i32, port: i32| {
            run(&mut c, get, |m, ctx| {
                let peer = socket::peer_addr(ctx, u(fd))?;
                write_addr(m, peer, u(addr), u(kind), u(port))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getsockopt",
        move |mut c: Caller<'_, T>, fd: i32, level: i32, name: i32, value: i32, size: i32| {
            run(&mut c, get, |m, ctx| {
                getsockopt(m, ctx, u(fd), u(level), u(name), u(value), u(size))
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_setsockopt",
        move |mut c: Caller<'_, T>, fd: i32, level: i32, name: i32, value: i32, size: i32| {
            run(&mut c, get, |m, ctx| {
                if u(size) > MAX_OPTION {
                    return Err(Errno::Inval);
                }
                let bytes = m.slice(u(value), u(size))?.to_vec();
                socket::set_option(ctx, u(fd), u(level), u(name), &bytes)
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_getaddrinfo",
        move |mut c: Caller<'_, T>,
              node: i32,
              node_len: i32,
              service: i32,
              service_len: i32,
              hints: i32,
              res: i32,
              max: i32,
              res_len: i32| {
            run(&mut c, get, |m, _| {
                getaddrinfo(
                    m,
                    (u(node), u(node_len)),
                    (u(service), u(service_len)),
                    u(hints),
                    u(res),
                    u(max),
                    u(res_len),
                )
            })
        },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_send_to",
        move |mut c: Caller<'_, T>,
              fd: i32,
              _iovs: i32,
              _n: i32,
              _addr: i32,
              _port: i32,
              _flags: i32,
              _out: i32| { run(&mut c, get, |_, ctx| no_datagrams(ctx, u(fd))) },
    )?;
    linker.func_wrap(
        MODULE,
        "sock_recv_from",
        move |mut c: Caller<'_, T>,
              fd: i32,
              _iovs: i32,
              _n: i32,
              _addr: i32,
              _flags: i32,
              _port: i32,
              _out: i32,
              _oflags: i32| { run(&mut c, get, |_, ctx| no_datagrams(ctx, u(fd))) },
    )?;
    Ok(())
}

/// Shadows preview 1's `sock_accept` with WasmEdge's `(fd, out_fd)` shape, in a linker that allows
/// shadowing (see the module doc).
pub(crate) fn add_wasmedge_accept<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: Getter<T>,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        MODULE,
        "sock_accept",
        move |mut c: Caller<'_, T>, fd: i32, out: i32| accept(&mut c, get, fd, 0, out),
    )?;
    Ok(())
}

/// Whether `module` imports `sock_accept` with WasmEdge's two-parameter shape.
pub(crate) fn wants_wasmedge_accept(module: &wasmtime::Module) -> bool {
    module.imports().any(|import| {
        import.module() == MODULE
            && import.name() == "sock_accept"
            && matches!(import.ty(), wasmtime::ExternType::Func(f) if f.params().len() == 2)
    })
}

/// `sock_accept` of either shape: an unwind point, since it waits for a connection.
fn accept<T>(
    c: &mut Caller<'_, T>,
    get: Getter<T>,
    fd: i32,
    flags: u16,
    out: i32,
) -> wasmtime::Result<i32> {
    run_unwind_point(c, get, "sock_accept", |m, ctx| {
        m.slice(u(out), 4)?;
        match socket::accept(ctx, u(fd), flags)? {
            Some(new) => m.write_u32(u(out), new).map(|()| Ran::Done),
            None => Ok(Ran::Suspended),
        }
    })
}

fn no_datagrams(ctx: &mut WasiCtx, fd: u32) -> GuestResult<()> {
    match ctx.entry(fd)?.handle {
        Handle::Socket(_) => Err(Errno::Notsup),
        _ => Err(Errno::Notsock),
    }
}

/// Reads a WasmEdge address (`{ buf, size }`) and the port passed beside it.
fn read_addr(m: &GuestMemory<'_>, ptr: u32, port: u32) -> GuestResult<SocketAddr> {
    let buf = m.read_u32(ptr)?;
    let size = m.read_u32(ptr.wrapping_add(4))?;
    let port = u16::try_from(port).map_err(|_| Errno::Inval)?;
    let ip = match size {
        4 => {
            let b: [u8; 4] = m.slice(buf, 4)?.try_into().map_err(|_| Errno::Fault)?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        16 => {
            let b: [u8; 16] = m.slice(buf, 16)?.try_into().map_err(|_| Errno::Fault)?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return Err(Errno::Inval),
    };
    Ok(SocketAddr::new(ip, port))
}

/// Writes `addr` as `sock_getlocaladdr` answers: its bytes into the guest's `{ buf, size }` (which must
/// hold them), 4 or 6 as its kind, and its port.
fn write_addr(
    m: &mut GuestMemory<'_>,
    addr: SocketAddr,
    ptr: u32,
    kind: u32,
    port: u32,
) -> GuestResult<()> {
    let buf = m.read_u32(ptr)?;
    let size = m.read_u32(ptr.wrapping_add(4))?;
    let (bytes, k): (Vec<u8>, u32) = match addr.ip() {
        IpAddr::V4(ip) => (ip.octets().to_vec(), 4),
        IpAddr::V6(ip) => (ip.octets().to_vec(), 6),
    };
    if (size as usize) < bytes.len() {
        return Err(Errno::Inval);
    }
    m.slice(kind, 4)?;
    m.slice(port, 4)?;
    m.write(buf, &bytes)?;
    m.write_u32(kind, k)?;
    m.write_u32(port, u32::from(addr.port()))
}

fn getsockopt(
    m: &mut GuestMemory<'_>,
    ctx: &mut WasiCtx,
    fd: u32,
    level: u32,
    name: u32,
    value: u32,
    size: u32,
) -> GuestResult<()> {
    let room = m.read_u32(size)?;
    let bytes = match socket::get_option(ctx, fd, level, name)? {
        OptValue::Int(v) => v.to_le_bytes().to_vec(),
        OptValue::Time(t) => socket::timeval_bytes(t).to_vec(),
        OptValue::Bytes(b) => b,
    };
    if (room as usize) < bytes.len() {
        return Err(Errno::Inval);
    }
    m.write(value, &bytes)?;
    m.write_u32(size, bytes.len() as u32)
}

/// Reads a NUL-terminated (or not) string of at most `max` bytes.
fn read_name(m: &GuestMemory<'_>, (ptr, len): (u32, u32), max: u32) -> GuestResult<String> {
    if len > max {
        return Err(Errno::Nametoolong);
    }
    let bytes = m.slice(ptr, len)?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..end])
        .map(str::to_owned)
        .map_err(|_| Errno::Ilseq)
}

/// The port a service name stands for.
fn service_port(service: &str) -> GuestResult<u16> {
    match service {
        "" => Ok(0),
        "http" => Ok(80),
        "https" => Ok(443),
        s => s.parse().map_err(|_| Errno::Inval),
    }
}

/// Resolves `node`: numeric addresses and `localhost` without asking anyone, other names through the
/// host's resolver.
fn resolve(node: &str, port: u16, passive: bool) -> GuestResult<Vec<SocketAddr>> {
    if node.is_empty() {
        let ip = if passive {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::LOCALHOST
        };
        return Ok(vec![SocketAddr::from((ip, port))]);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lower = node.to_ascii_lowercase();
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Ok(vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ]);
    }
    let found: Vec<SocketAddr> = (node, port)
        .to_socket_addrs()
        .map_err(|_| Errno::Noent)?
        .collect();
    if found.is_empty() {
        return Err(Errno::Noent);
    }
    Ok(found)
}

fn getaddrinfo(
    m: &mut GuestMemory<'_>,
    node: (u32, u32),
    service: (u32, u32),
    hints: u32,
    res: u32,
    max: u32,
    res_len: u32,
) -> GuestResult<()> {
    let node = read_name(m, node, MAX_NODE)?;
    let service = read_name(m, service, MAX_SERVICE)?;
    let hint_flags = m.read_u16(hints)?;
    let hint_family = m.read_u8(hints.wrapping_add(2))?;
    m.slice(res_len, 4)?;
    let port = service_port(&service)?;
    // AI_PASSIVE is the first flag of the crate's enum (0), so "no flags" cannot be told from it: an
    // empty node is the unspecified address only when no other flag is set either.
    let passive = hint_flags == 0;
    let found: Vec<SocketAddr> = resolve(&node, port, passive)?
        .into_iter()
        .filter(|a| match hint_family {
            1 => a.is_ipv4(),
            2 => a.is_ipv6(),
            _ => true,
        })
        .collect();
    let mut at = m.read_u32(res)?;
    let mut written = 0u32;
    for addr in found {
        if written >= max.min(MAX_ADDRINFO) || at == 0 {
            break;
        }
        let sockaddr = m.read_u32(at.wrapping_add(12))?;
        let data_len = m.read_u32(sockaddr.wrapping_add(4))?;
        let data = m.read_u32(sockaddr.wrapping_add(8))?;
        let (family, bytes) = match addr.ip() {
            IpAddr::V4(ip) => (1u8, ip.octets().to_vec()),
            IpAddr::V6(ip) => (2u8, ip.octets().to_vec()),
        };
        // An address the guest's sockaddr cannot hold (IPv6 in the crate's 14 bytes) is left out.
        if (data_len as usize) < 2 + bytes.len() {
            continue;
        }
        let mut payload = addr.port().to_be_bytes().to_vec();
        payload.extend_from_slice(&bytes);
        m.write(data, &payload)?;
        m.write(sockaddr, &[family])?;
        m.write(at.wrapping_add(2), &[family, 2, 1])?;
        m.write_u32(at.wrapping_add(8), payload.len() as u32)?;
        m.write_u32(at.wrapping_add(20), 0)?;
        written += 1;
        at = m.read_u32(at.wrapping_add(24))?;
    }
    if written == 0 {
        return Err(Errno::Noent);
    }
    m.write_u32(res_len, written)
}
