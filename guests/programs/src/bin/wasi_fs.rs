//! Exercises the filesystem through Rust's std on wasm32-wasip1 and prints every result, success or errno, so
//! two WASI hosts can be compared line by line. Also echoes stdin, args and env, writes to stderr, and exits
//! with the code given as its first argument.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use stasis_test_programs::{show, symlink};

fn listing(dir: &str) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    names.sort();
    Ok(names)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("args: {:?}", &args[1..]);
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    env.sort();
    println!("env: {env:?}");
    let mut input = String::new();
    show(
        "stdin",
        std::io::stdin()
            .read_to_string(&mut input)
            .map(|_| input.clone()),
    );

    show("mkdir", fs::create_dir("/work"));
    show("mkdir again", fs::create_dir("/work"));
    show("mkdir nested", fs::create_dir_all("/work/a/b"));
    show("write", fs::write("/work/a/f.txt", b"hello world\n"));
    show("read", fs::read_to_string("/work/a/f.txt"));
    show("read missing", fs::read_to_string("/work/missing"));
    show("read dir as file", fs::read_to_string("/work/a"));
    {
        let mut f = OpenOptions::new()
            .append(true)
            .open("/work/a/f.txt")
            .expect("open append");
        show("append", f.write_all(b"more\n"));
        show("append seek", f.seek(SeekFrom::Start(0)));
        show("append again", f.write_all(b"end\n"));
    }
    show("after append", fs::read_to_string("/work/a/f.txt"));
    {
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/work/a/f.txt")
            .expect("open rw");
        show("seek", f.seek(SeekFrom::Start(6)));
        let mut b = [0u8; 5];
        show(
            "read at 6",
            f.read_exact(&mut b)
                .map(|_| String::from_utf8_lossy(&b).into_owned()),
        );
        show("seek end", f.seek(SeekFrom::End(-4)));
        show("seek before start", f.seek(SeekFrom::Current(-1000)));
        show("overwrite", f.write_all(b"END\n"));
        show("set_len", f.set_len(5));
        show("len", f.metadata().map(|m| m.len()));
        show("sync", f.sync_all());
    }
    show("after truncate", fs::read_to_string("/work/a/f.txt"));
    show(
        "metadata",
        fs::metadata("/work/a").map(|m| (m.is_dir(), m.is_file())),
    );
    show("copy", fs::copy("/work/a/f.txt", "/work/a/g.txt"));
    show("rename", fs::rename("/work/a/g.txt", "/work/a/b/h.txt"));
    show("rename missing", fs::rename("/work/a/nope", "/work/a/x"));
    show(
        "hard link",
        fs::hard_link("/work/a/f.txt", "/work/a/link.txt"),
    );
    show("nlink", fs::metadata("/work/a/link.txt").map(|m| m.len()));
    show("symlink", symlink("f.txt", "/work/a/sym"));
    show("read_link", fs::read_link("/work/a/sym"));
    show("read via symlink", fs::read_to_string("/work/a/sym"));
    show(
        "symlink_metadata",
        fs::symlink_metadata("/work/a/sym").map(|m| m.file_type().is_symlink()),
    );
    show("listing", listing("/work/a"));
    show("listing root", listing("/"));
    show("read_dir file", listing("/work/a/f.txt"));
    show("remove non-empty dir", fs::remove_dir("/work/a"));
    show("remove file", fs::remove_file("/work/a/link.txt"));
    show("remove dir as file", fs::remove_file("/work/a/b"));
    show("remove symlink", fs::remove_file("/work/a/sym"));
    show("remove_dir_all", fs::remove_dir_all("/work/a/b"));
    show("listing after", listing("/work/a"));
    show(
        "exclusive create",
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open("/work/a/f.txt")
            .map(drop),
    );
    show(
        "set times",
        fs::File::open("/work/a/f.txt").and_then(|f| f.set_modified(std::time::UNIX_EPOCH)),
    );
    show(
        "mtime",
        fs::metadata("/work/a/f.txt")
            .and_then(|m| m.modified())
            .map(|t| t == std::time::UNIX_EPOCH),
    );
    show("data dir", listing("/data"));
    show("data read", fs::read_to_string("/data/ro.txt"));
    show("data write", fs::write("/data/new.txt", b"x"));
    show("data mkdir", fs::create_dir("/data/d"));
    show("data remove", fs::remove_file("/data/ro.txt"));
    show(
        "data open rw",
        OpenOptions::new()
            .write(true)
            .open("/data/ro.txt")
            .map(drop),
    );

    eprintln!("to stderr");
    let code = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    std::process::exit(code);
}
