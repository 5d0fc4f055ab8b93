"""The seed's persistence flow, driven by the real E2B Python SDK against a local Stasis server.

Run by `tests/sdk/run.sh`, which starts the server and sets E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
Exits non-zero (with the failing step) if anything differs from what the Novita/E2B documentation promises.
"""

import sys
import uuid

from e2b import Sandbox, SandboxQuery, SandboxState


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

    assert Sandbox.kill(sandbox.sandbox_id) is True
    assert Sandbox.kill(sandbox.sandbox_id) is False, "a second kill reports not found"
    step("killed; a second kill reports not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
