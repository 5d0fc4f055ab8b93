//! Copies stdin to stdout in upper case, says so on stderr, lists the directories it was given as
//! arguments after the first, and exits with the code given as its first argument: a command guest for
//! checking that a runner passes stdio, preopens and exit codes through.
use std::io::{Read, Write};

fn main() {
    let mut args = std::env::args().skip(1);
    let code: i32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("reading stdin: {e}");
        std::process::exit(70);
    }
    print!("{}", input.to_uppercase());
    for dir in args {
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                println!("{dir}: {}", names.join(" "));
            }
            Err(e) => println!("{dir}: {e}"),
        }
    }
    let _ = std::io::stdout().flush();
    eprintln!("copied {} bytes", input.len());
    std::process::exit(code);
}
