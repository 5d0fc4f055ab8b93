//! Prints a greeting with its arguments: the smallest command guest, used to check the build pipeline.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    println!("hello {}", args.join(" "));
}
