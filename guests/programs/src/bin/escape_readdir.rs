//! Hands `fd_readdir` buffers that are huge (64 MiB, really allocated), claim to be larger than memory, start
//! past its end, or wrap around 4 GiB, plus an absurd cookie, and prints each result. The host must fill a
//! real buffer only with what the directory holds and answer EFAULT for the rest, allocating nothing sized
//! by the guest's claims.

use wasi::wasi_snapshot_preview1 as raw;

fn main() {
    let mut used = 0u32;
    let used_ptr = &mut used as *mut u32 as i32;
    let mut big = vec![0u8; 64 << 20];
    let mut small = [0u8; 256];
    // SAFETY for the whole block: the buffers passed with their true lengths are live; every other pointer
    // and length is deliberately out of bounds and must be refused by the host without touching memory.
    unsafe {
        let r = raw::fd_readdir(3, big.as_mut_ptr() as i32, big.len() as i32, 0, used_ptr);
        println!("64 MiB buffer: {r} used {used}");
        let r = raw::fd_readdir(3, small.as_mut_ptr() as i32, u32::MAX as i32, 0, used_ptr);
        println!("length past memory end: {r}");
        let r = raw::fd_readdir(3, 0xFFFF_FFF0_u32 as i32, 100, 0, used_ptr);
        println!("buffer past memory end: {r}");
        let r = raw::fd_readdir(3, 0xFFFF_0000_u32 as i32, 0x0002_0000, 0, used_ptr);
        println!("buffer wrapping 4 GiB: {r}");
        let r = raw::fd_readdir(3, small.as_mut_ptr() as i32, 256, 0, 0xFFFF_FFFF_u32 as i32);
        println!("bad out pointer: {r}");
        used = 7;
        let r = raw::fd_readdir(3, small.as_mut_ptr() as i32, 256, u64::MAX as i64, used_ptr);
        println!("cookie past the end: {r} used {used}");
    }
    // The entries the 64 MiB call wrote: the directory's own names, nothing more.
    println!(
        "entries end at {}",
        big.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
    );
}
