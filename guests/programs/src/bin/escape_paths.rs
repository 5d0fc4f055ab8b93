//! Tries every way out of the sandbox directory the host test prepared — `..` (plain, absolute, through a
//! subdirectory), absolute paths to the host's files, absolute and relative symlinks pointing outside, a
//! symlink to a directory outside, symlinks the guest makes itself, symlink loops, hard links to an outside
//! file, renames and mkdirs outside — and prints each result (`what: ok …` or `what: errno N`).

use std::fs;

use stasis_test_programs::{show, symlink};

fn main() {
    show("dotdot", fs::read_to_string("../outside.txt"));
    show("etc passwd dotdot", fs::read_to_string("../../etc/passwd"));
    show("etc passwd absolute", fs::read_to_string("/etc/passwd"));
    show(
        "etc passwd deep",
        fs::read_to_string("/../../../../../../etc/passwd"),
    );
    show("slash dotdot", fs::read_to_string("/../outside.txt"));
    show("deep dotdot", fs::read_to_string("/sub/../../outside.txt"));
    show("subdir dotdot", fs::read_to_string("sub/../../outside.txt"));
    show("list parent", fs::read_dir("/..").map(|_| ()));
    show("absolute symlink out", fs::read_to_string("/abs_link"));
    show("relative symlink out", fs::read_to_string("/rel_link"));
    show("symlink to dir out", fs::read_dir("/dir_link").map(|_| ()));
    show(
        "through dir symlink",
        fs::read_to_string("/dir_link/outside.txt"),
    );
    show(
        "write through symlink out",
        fs::write("/rel_link", b"pwned"),
    );
    show(
        "write through dir symlink",
        fs::write("/dir_link/pwned.txt", b"pwned"),
    );
    show(
        "hard link to outside",
        fs::hard_link("/../outside.txt", "/stolen.txt"),
    );
    show(
        "hard link via symlink",
        fs::hard_link("/rel_link", "/stolen2.txt"),
    );
    // A hard link to a symlink is one more symlink, no way out.
    show(
        "read via linked symlink",
        fs::read_to_string("/stolen2.txt"),
    );
    show("symlink loop", fs::read_to_string("/loop_a"));
    show("self loop", fs::metadata("/self_loop").map(|_| ()));
    show(
        "create symlink absolute",
        symlink("/etc/passwd", "/made_abs"),
    );
    show("read made_abs", fs::read_to_string("/made_abs"));
    show(
        "create symlink dotdot",
        symlink("../outside.txt", "/made_rel"),
    );
    show("read made_rel", fs::read_to_string("/made_rel"));
    show("create symlink loop", symlink("made_loop", "/made_loop"));
    show("read made_loop", fs::read_to_string("/made_loop"));
    show("rename out", fs::rename("/inside.txt", "/../moved.txt"));
    show("mkdir out", fs::create_dir("/../newdir"));
    show("inside still readable", fs::read_to_string("/inside.txt"));
}
