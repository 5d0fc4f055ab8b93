//! Paths of the guest programs Stasis ships and tests with, compiled for `wasm32-wasip1` by this crate's build
//! script from the `guests/` workspace. Each program is a constant named after it in upper case (the file
//! `guests/programs/src/bin/counter.rs` is [`COUNTER`]-style `COUNTER`), [`ALL`] lists them, and
//! `foreach_program!` lets a test suite require one test per program.

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// Reads the compiled bytes of a guest program given its path constant.
///
/// # Panics
/// Panics when the file produced by the build script has disappeared, which only happens if the target
/// directory was tampered with after the build.
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("guest program {path} is missing: {e}"))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Guests known to hold paths of the machine that built them, and why; the test fails once one no
    /// longer does, so that it is taken off this list.
    const KNOWN_TO_EMBED_BUILD_PATHS: &[(&str, &str)] = &[(
        "python",
        "rustpython-vm 0.5.0's build script writes every environment variable of its build (OUT_DIR, PATH, \
         HOME, CARGO_MAKEFLAGS, …) into `_sysconfigdata.build_time_vars`",
    )];

    /// A blob names its template by the sha256 of the guest's bytes, so a guest built from the same
    /// sources must have the same bytes on any machine — whatever its CPU, cargo home or checkout — for a
    /// blob to resume there. Paths of this machine inside a guest (panic locations of registry crates,
    /// say) make them differ.
    #[test]
    fn no_guest_embeds_a_path_of_the_machine_that_built_it() {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .nth(2)
            .expect("guests/artifacts lives in the repository")
            .to_path_buf();
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
        let needles: Vec<String> = std::iter::once(repo)
            .chain(cargo_home)
            .map(|p| format!("{}/", p.display()))
            .collect();
        for (name, path) in super::ALL {
            let wasm = super::bytes(path);
            let found: Vec<String> = needles
                .iter()
                .filter_map(|needle| {
                    let n = wasm
                        .windows(needle.len())
                        .filter(|w| *w == needle.as_bytes())
                        .count();
                    (n > 0).then(|| format!("{n} under {needle}"))
                })
                .collect();
            match KNOWN_TO_EMBED_BUILD_PATHS
                .iter()
                .find(|(known, _)| known == name)
            {
                None => assert!(found.is_empty(), "{name}.wasm holds paths: {found:?}"),
                Some((_, why)) => assert!(
                    !found.is_empty(),
                    "{name}.wasm no longer holds paths of this machine ({why}): take it off the list"
                ),
            }
        }
    }
}
