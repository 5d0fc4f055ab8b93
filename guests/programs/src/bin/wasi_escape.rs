//! Tries every way out of the sandbox directory the host test prepared (`..`, `/..`, absolute and relative
//! symlinks pointing outside, a hard link to an outside file, a symlink loop) and prints each errno.

use std::fs;

use stasis_test_programs::{show, symlink};

fn main() {
    show("dotdot", fs::read_to_string("../outside.txt"));
    show("slash dotdot", fs::read_to_string("/../outside.txt"));
    show("deep dotdot", fs::read_to_string("/sub/../../outside.txt"));
    show("absolute symlink out", fs::read_to_string("/abs_link"));
    show("relative symlink out", fs::read_to_string("/rel_link"));
    show("symlink to dir out", fs::read_dir("/dir_link").map(|_| ()));
    show(
        "write through symlink out",
        fs::write("/rel_link", b"pwned"),
    );
    show(
        "hard link to outside",
        fs::hard_link("/../outside.txt", "/stolen.txt"),
    );
    show(
        "hard link via symlink",
        fs::hard_link("/rel_link", "/stolen2.txt"),
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
    show("rename out", fs::rename("/inside.txt", "/../moved.txt"));
    show("mkdir out", fs::create_dir("/../newdir"));
    show("inside still readable", fs::read_to_string("/inside.txt"));
}
