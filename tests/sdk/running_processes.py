"""Running processes survive a pause, driven by the real E2B Python SDKs (e2b, e2b-code-interpreter) against a
local Stasis server: what the persistence page promises ("in-memory state is preserved, including running
processes") for the flows a new user tries.

Run by `tests/sdk/run.sh`, which starts the server and sets E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
Exits non-zero with the failing step if anything differs.
"""

import sys
import threading
import time

from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox


def step(message: str) -> None:
    print(f"python (running processes): {message}", flush=True)


def wait_for_file(sandbox: Sandbox, path: str, deadline_s: float = 60.0) -> str:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        result = sandbox.commands.run(f"cat {path} 2>/dev/null || true")
        if result.stdout:
            return result.stdout
        time.sleep(0.2)
    raise AssertionError(f"{path} never appeared")


def background_loop_keeps_ticking() -> None:
    sandbox = Sandbox.create(timeout=120)
    loop = (
        "i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo $i >> /tmp/tick; sleep 0.5; done; "
        "echo finished > /tmp/done"
    )
    handle = sandbox.commands.run(loop, background=True)
    time.sleep(2)
    assert sandbox.pause() is True
    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
    listed = [p.pid for p in resumed.commands.list()]
    assert handle.pid in listed, f"the loop is listed again after the resume: {listed}"
    assert wait_for_file(resumed, "/tmp/done") == "finished\n"
    ticks = resumed.files.read("/tmp/tick").split()
    assert ticks == [str(i) for i in range(1, 13)], ticks
    step(f"a background loop paused after 2 s finished after the resume: ticks {ticks[0]}..{ticks[-1]}, /tmp/done written")
    resumed.kill()


def a_sleep_sleeps_only_what_is_left() -> None:
    sandbox = Sandbox.create(timeout=120)
    sandbox.commands.run("echo before > /tmp/s; sleep 3; echo after >> /tmp/s", background=True)
    time.sleep(1)
    assert sandbox.pause() is True
    time.sleep(1)
    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
    started = time.monotonic()
    end = started + 30
    while time.monotonic() < end:
        content = resumed.files.read("/tmp/s")
        if "after" in content:
            break
        time.sleep(0.1)
    took = time.monotonic() - started
    assert content == "before\nafter\n", content
    assert took < 2.8, f"the sleep had about 2 s left, it took {took:.2f} s after the resume"
    step(f"`sleep 3` paused after 1 s: `after` arrived {took:.2f} s after the resume")
    resumed.kill()


def connect_to_a_command_after_the_resume() -> None:
    sandbox = Sandbox.create(timeout=120)
    handle = sandbox.commands.run(
        "echo first; read line; echo got $line; sleep 0.3; echo last", background=True, stdin=True
    )
    time.sleep(1)
    assert sandbox.pause() is True
    try:
        handle.wait()
        raise AssertionError("the stream of a suspended command ends with an error")
    except AssertionError:
        raise
    except Exception as error:  # the SDK raises on the interrupted stream
        assert "paused" in str(error), error
    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
    attached = resumed.commands.connect(handle.pid)
    resumed.commands.send_stdin(handle.pid, "hello\n")
    result = attached.wait()
    assert result.exit_code == 0, result
    assert result.stdout == "got hello\nlast\n", result.stdout
    step(f"commands.connect({handle.pid}) after the resume: stdin reached it, output and exit code arrived")
    resumed.kill()


def a_cpu_bound_shell_loop_finishes_the_count() -> None:
    sandbox = Sandbox.create(timeout=120)
    handle = sandbox.commands.run(
        "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo count=$i > /tmp/count", background=True
    )
    time.sleep(0.5)
    assert sandbox.pause() is True
    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=120)
    assert handle.pid in [p.pid for p in resumed.commands.list()], "the loop was still running"
    assert wait_for_file(resumed, "/tmp/count") == "count=30000\n"
    step("a CPU-bound shell loop (no sleeps) paused mid-loop finished with the right count")
    resumed.kill()


def a_cell_in_flight_finishes_after_the_resume() -> None:
    sandbox = CodeSandbox.create(timeout=300)
    sandbox.run_code("import time\nxs = []")
    cell = "for i in range(30):\n    xs.append(i)\n    time.sleep(0.5)\n"
    outcome = {}

    def run_cell() -> None:
        try:
            outcome["execution"] = sandbox.run_code(cell, timeout=120)
        except Exception as error:  # the pause ends the cell's stream
            outcome["error"] = error

    runner = threading.Thread(target=run_cell)
    runner.start()
    time.sleep(1.5)
    started = time.monotonic()
    assert sandbox.pause() is True
    took = time.monotonic() - started
    runner.join(timeout=60)
    assert took < 3, f"the pause took {took:.2f} s"
    execution = outcome.get("execution")
    if execution is not None:
        assert execution.error is not None and execution.error.name == "SandboxPaused", execution
    resumed = CodeSandbox.connect(sandbox.sandbox_id, timeout=300)
    result = resumed.run_code("xs == list(range(30)), len(xs)")
    assert result.text == "(True, 30)", result
    step(f"a run_code loop paused 1.5 s in (pause took {took:.2f} s) ended complete and in order after connect")
    resumed.kill()


def main() -> int:
    background_loop_keeps_ticking()
    a_sleep_sleeps_only_what_is_left()
    connect_to_a_command_after_the_resume()
    a_cpu_bound_shell_loop_finishes_the_count()
    a_cell_in_flight_finishes_after_the_resume()
    return 0


if __name__ == "__main__":
    sys.exit(main())
