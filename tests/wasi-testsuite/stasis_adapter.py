"""wasi-testsuite runtime adapter for `stasis run` (Stasis's own wasi_snapshot_preview1 host).

The binary is taken from the STASIS environment variable (default: `stasis` on PATH); extra words in it are
kept, e.g. STASIS="/path/to/stasis".
"""
import os
import shlex
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

STASIS = shlex.split(os.getenv("STASIS", "stasis"), posix=os.name != "nt")


def get_name() -> str:
    return "stasis"


def get_version() -> str:
    result = subprocess.run(STASIS[0:1] + ["--version"], encoding="UTF-8",
                            capture_output=True, check=True)
    # "stasis 0.1.0" -> "0.1.0"
    return result.stdout.splitlines()[0].split(" ")[-1]


def get_wasi_versions() -> List[str]:
    return ["wasm32-wasip1"]


def get_wasi_worlds() -> List[str]:
    return ["wasi:cli/command"]


def compute_argv(test_path: str,
                 args_env_dirs: Tuple[List[str], Dict[str, str], List[Tuple[Path, str]]],
                 proposals: List[str],
                 wasi_world: str,
                 wasi_version: str) -> List[str]:
    # pylint: disable-msg=unused-argument
    args, env, dirs = args_env_dirs
    argv = STASIS + ["run"]
    for key, value in env.items():
        argv += ["--env", f"{key}={value}"]
    for host, guest in dirs:
        argv += ["--dir", f"{host}::{guest}"]  # noqa: E231
    argv += [test_path]
    argv += args
    return argv
