"""The seed's persistence flow, driven by the real E2B Python SDK against a local Stasis server.

Run by `tests/sdk/run.sh`, which starts the server and sets E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
Exits non-zero (with the failing step) if anything differs from what the Novita/E2B documentation promises.
"""

import sys
import uuid

from e2b import CommandExitException, Sandbox, SandboxQuery, SandboxState


def step(message: str) -> None:
    print(f"python: {message}", flush=True)


def main() -> int:
    tag = uuid.uuid4().hex
    sandbox = Sandbox.create(metadata={"suite": "seed", "tag": tag}, timeout=120)
    step(f"created {sandbox.sandbox_id}")

    result = sandbox.commands.run("echo hello > /tmp/message.txt")
    assert result.exit_code == 0, result
    step("wrote /tmp/message.txt")

    assert sandbox.pause() is True, "the first pause pauses"
    step("paused")
    assert Sandbox.pause(sandbox.sandbox_id) is False, "a second pause reports it was already paused"

    paused = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.PAUSED])).next_items()
    assert [s.sandbox_id for s in paused] == [sandbox.sandbox_id], paused
    step("listed among the paused sandboxes by metadata")

    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
    step("connected (resumed)")
    output = resumed.commands.run("cat /tmp/message.txt")
    assert output.stdout == "hello\n", output
    step(f"read back {output.stdout.strip()!r}")

    running = Sandbox.list(query=SandboxQuery(metadata={"tag": tag}, state=[SandboxState.RUNNING])).next_items()
    assert [s.sandbox_id for s in running] == [sandbox.sandbox_id], running

    assert resumed.files.read("/tmp/message.txt") == "hello\n"
    resumed.files.write("/tmp/uploaded.txt", "from the sdk")
    assert resumed.commands.run("cat /tmp/uploaded.txt").stdout == "from the sdk"
    step("files api round trip")

    chunks = []
    streamed = resumed.commands.run("echo a; sleep 1; echo b", on_stdout=chunks.append)
    assert streamed.stdout == "a\nb\n" and chunks[0] == "a\n", chunks
    step(f"output streamed as written: {chunks!r}")

    cat = resumed.commands.run("cat", background=True, stdin=True)
    assert cat.pid in [p.pid for p in resumed.commands.list()], "a background command is listed"
    resumed.commands.send_stdin(cat.pid, "ping ")
    resumed.commands.send_stdin(cat.pid, "pong")
    resumed.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "ping pong"
    assert cat.pid not in [p.pid for p in resumed.commands.list()], "an ended command is not listed"
    step("background command: stdin sent, closed, echoed back")

    sleeper = resumed.commands.run("sleep 100", background=True)
    assert sleeper.kill() is True
    try:
        sleeper.wait()
        raise AssertionError("a killed command reports its signal")
    except CommandExitException as error:
        assert error.exit_code == 137, error
    assert resumed.commands.kill(sleeper.pid) is False, "a second kill reports not found"
    step("background command killed (exit 137); a second kill reports not found")

    assert Sandbox.kill(sandbox.sandbox_id) is True
    assert Sandbox.kill(sandbox.sandbox_id) is False, "a second kill reports not found"
    step("killed; a second kill reports not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
