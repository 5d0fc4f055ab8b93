"""The shell runs programs, driven by the real E2B Python SDK against a local Stasis server: what a new user
tries first — write a file and run it with `python3`, pipe into it, mix it with the shell's utilities — and
the process API seeing the programs a command started.

Run by `tests/sdk/run.sh`, which starts the server and sets E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
Exits non-zero with the failing step if anything differs.
"""

import time

from e2b import CommandExitException, Sandbox


def step(message: str) -> None:
    print(f"python (programs): {message}", flush=True)


def run(sandbox: Sandbox, line: str):
    """Runs `line` and returns (exit code, stdout, stderr), whatever the exit code."""
    try:
        result = sandbox.commands.run(line, timeout=120)
    except CommandExitException as failed:
        return failed.exit_code, failed.stdout, failed.stderr
    return result.exit_code, result.stdout, result.stderr


def main() -> None:
    sandbox = Sandbox.create(template="code-interpreter-v1", timeout=300)
    try:
        sandbox.files.write("/home/user/main.py", "import sys\nprint('hello from', sys.argv[1:])\n")
        code, out, err = run(sandbox, "cd /home/user && python3 main.py a b")
        assert (code, out) == (0, "hello from ['a', 'b']\n"), (code, out, err)
        step("files.write then `python3 main.py` prints its output")

        code, out, _ = run(sandbox, "python3 -c 'print(6*7)'")
        assert (code, out) == (0, "42\n"), (code, out)
        code, out, _ = run(sandbox, "echo 21 | python3 -c 'import sys; print(int(sys.stdin.read())*2)'")
        assert (code, out) == (0, "42\n"), (code, out)
        code, out, _ = run(sandbox, "X=$(python3 -c 'print(6*7)'); echo \"x=$X\"")
        assert (code, out) == (0, "x=42\n"), (code, out)
        step("`python3 -c`, stdin from a pipe, and $(...)")

        code, _, err = run(sandbox, "cd /home/user && python3 missing.py")
        assert code == 2, (code, err)
        assert "python3: can't open file '/home/user/missing.py': [Errno 2] No such file or directory" in err, err
        sandbox.files.write("/home/user/boom.py", "x = 1\nprint(x / 0)\n")
        code, _, err = run(sandbox, "cd /home/user && python3 boom.py")
        assert code == 1, (code, err)
        assert err.startswith("Traceback (most recent call last):"), err
        assert "ZeroDivisionError: division by zero" in err, err
        step("a missing file exits 2 with CPython's message; an exception exits 1 with a traceback")

        code, out, _ = run(sandbox, "node -e 'console.log(6*7)'")
        assert (code, out) == (0, "42\n"), (code, out)
        step("`node -e`")

        sandbox.files.write(
            "/home/user/gen.py", "for w in ['pear', 'apple', 'fig', 'kiwi', 'date']:\n    print(w)\n"
        )
        code, out, _ = run(sandbox, "cd /home/user && python3 gen.py | sort | head -3")
        assert (code, out) == (0, "apple\ndate\nfig\n"), (code, out)
        step("a pipeline mixing python3, sort and head")

        handle = sandbox.commands.run(
            "python3 -c 'name = input(\"name? \"); print(\"hello\", name[::-1])'",
            background=True,
            stdin=True,
        )
        sandbox.commands.send_stdin(handle.pid, "olleh\n")
        result = handle.wait()
        assert (result.exit_code, result.stdout) == (0, "name? hello hello\n"), result
        step("an interactive python3 reads what send_stdin sends")

        sandbox.files.write(
            "/home/user/loop.py",
            "import time\nwhile True:\n    print('tick', flush=True)\n    time.sleep(0.2)\n",
        )
        handle = sandbox.commands.run("cd /home/user && python3 loop.py", background=True)
        deadline = time.monotonic() + 120
        child = None
        while child is None and time.monotonic() < deadline:
            child = next(
                (p for p in sandbox.commands.list() if p.cmd == "python3" and p.args == ["loop.py"]), None
            )
            time.sleep(0.2)
        assert child is not None, sandbox.commands.list()
        assert child.pid != handle.pid
        assert sandbox.commands.kill(child.pid) is True
        try:
            handle.wait()
            raise AssertionError("the shell's python3 was killed: its status is not 0")
        except CommandExitException as ended:
            assert ended.exit_code == 137, ended.exit_code
            assert "tick" in ended.stdout, ended.stdout
        assert all(p.pid != child.pid for p in sandbox.commands.list())
        step("a background python3 loop is listed by commands.list() and ended by commands.kill(pid)")
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()
