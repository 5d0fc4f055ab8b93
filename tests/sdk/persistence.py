"""The E2B SDK's persistence surface beyond the seed flow, driven by the real `e2b` and `e2b-code-interpreter`
Python SDKs against a local Stasis server: snapshots, forks, filesystem-only pauses, metrics and logs,
watchers, multi-file writes, volumes, and the remaining control-plane calls.

Run by `tests/sdk/run.sh`, which starts the server (metrics sampled every second) and sets E2B_API_URL,
E2B_SANDBOX_URL, E2B_VOLUME_API_URL and E2B_API_KEY. Every check goes through the SDKs' own code: the
high-level classes where they have the call, their generated API client (`e2b.api.client.api...`) where
only that has it. Exits non-zero with the failing step.
"""

import asyncio
import sys
import time
import uuid

from e2b import (
    AsyncSandbox,
    FilesystemEventType,
    InvalidArgumentException,
    Sandbox,
    SandboxState,
    Volume,
    VolumeException,
)
from e2b.sandbox.filesystem.filesystem import WriteEntry
from e2b.api.client.api.sandboxes import (
    get_sandboxes_metrics,
    get_sandboxes_sandbox_id_logs,
    get_v_2_sandboxes_sandbox_id_logs,
    post_sandboxes_sandbox_id_refreshes,
)
from e2b.api.client.models import LogLevel, SandboxRefreshRequest
from e2b.connection_config import ConnectionConfig
from e2b.sandbox_sync.paginator import get_api_client
from e2b_code_interpreter import Sandbox as CodeSandbox

TAG = uuid.uuid4().hex[:12]


def step(message: str) -> None:
    print(f"python: {message}", flush=True)


def eventually(what, check, timeout=20.0):
    """Polls `check` until it returns something truthy, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def api_client():
    return get_api_client(ConnectionConfig())


def snapshots() -> None:
    source = Sandbox.create(timeout=120, metadata={"suite": "persistence"})
    source.commands.run("echo snapshotted > /home/user/state.txt")
    first = source.create_snapshot(name=f"snap-{TAG}")
    assert first.snapshot_id.startswith("snap_"), first
    assert first.names == [f"snap-{TAG}"], first
    step(f"create_snapshot: {first.snapshot_id} named {first.names}")

    others = [source.create_snapshot() for _ in range(2)]
    assert all(o.names == [] for o in others)
    ids = []
    paginator = Sandbox.list_snapshots(sandbox_id=source.sandbox_id, limit=1)
    while paginator.has_next:
        page = paginator.next_items()
        assert len(page) <= 1, page
        ids.extend(s.snapshot_id for s in page)
    assert ids == [first.snapshot_id] + [o.snapshot_id for o in others], ids
    by_name = Sandbox.list_snapshots(name=f"snap-{TAG}").next_items()
    assert [s.snapshot_id for s in by_name] == [first.snapshot_id], by_name
    assert [s.snapshot_id for s in source.list_snapshots().next_items()] == ids
    step("list_snapshots: filtered by sandbox and by name, one page at a time")

    from_id = Sandbox.create(first.snapshot_id, timeout=60)
    assert from_id.files.read("/home/user/state.txt") == "snapshotted\n"
    from_name = Sandbox.create(f"snap-{TAG}", timeout=60)
    assert from_name.commands.run("cat /home/user/state.txt").stdout == "snapshotted\n"
    step("Sandbox.create(snapshot_id) and Sandbox.create(snapshot name) start with its files")

    for snapshot in [first] + others:
        assert Sandbox.delete_snapshot(snapshot.snapshot_id) is True
    assert Sandbox.delete_snapshot(first.snapshot_id) is False, "a second delete reports not found"
    assert source.list_snapshots().next_items() == []
    step("delete_snapshot: true, then false")
    for sandbox in (source, from_id, from_name):
        sandbox.kill()

    # Memory: a variable of the code interpreter lives in its process's linear memory.
    cells = CodeSandbox.create(timeout=180)
    cells.run_code("x = 41")
    cells.files.write("/home/user/notes.txt", "kept")
    full = cells.create_snapshot()
    files_only = cells.create_snapshot(mode="filesystem")
    assert cells.run_code("x + 1").text == "42", "the source keeps running with its memory"
    warm = CodeSandbox.create(full.snapshot_id, timeout=120)
    assert warm.run_code("x + 1").text == "42"
    step("a sandbox from a full snapshot has its memory: x + 1 == 42")
    cold = CodeSandbox.create(files_only.snapshot_id, timeout=120)
    assert cold.files.read("/home/user/notes.txt") == "kept"
    execution = cold.run_code("x")
    assert execution.error is not None and execution.error.name == "NameError", execution
    step("a sandbox from a mode='filesystem' snapshot has the files and cold-started memory")
    for sandbox in (cells, warm, cold):
        sandbox.kill()
    for snapshot in (full, files_only):
        Sandbox.delete_snapshot(snapshot.snapshot_id)


def forks() -> None:
    cells = CodeSandbox.create(timeout=180)
    cells.run_code("counter = 100")
    cells.files.write("/home/user/fork.txt", "from the source")
    forked = cells.fork(count=3, timeout=120)
    assert len(forked) == 3, forked
    assert all(isinstance(f, CodeSandbox) for f in forked), forked
    assert len({f.sandbox_id for f in forked} | {cells.sandbox_id}) == 4
    for index, fork in enumerate(forked):
        assert fork.run_code(f"counter + {index}").text == str(100 + index)
        assert fork.files.read("/home/user/fork.txt") == "from the source"
    # Each fork is its own sandbox: what one changes, the source and the others do not see.
    forked[0].run_code("counter = 0")
    assert forked[1].run_code("counter").text == "100"
    assert cells.run_code("counter").text == "100", "the source keeps running, untouched"
    assert cells.get_info().state == SandboxState.RUNNING
    step("fork(count=3): three sandboxes with the source's memory and files; the source keeps running")
    for bad in (0, 21):
        try:
            cells.fork(count=bad)
            raise AssertionError(f"fork(count={bad}) was sent")
        except InvalidArgumentException:
            pass
    step("fork counts outside 1..20 are refused")
    for sandbox in [cells] + forked:
        sandbox.kill()


def filesystem_pause() -> None:
    cells = CodeSandbox.create(timeout=180)
    cells.run_code("y = 7")
    cells.files.write("/home/user/kept.txt", "on disk")
    assert cells.pause(mode="filesystem") is True
    assert Sandbox.get_info(cells.sandbox_id).state == SandboxState.PAUSED
    resumed = CodeSandbox.connect(cells.sandbox_id, timeout=120)
    assert resumed.files.read("/home/user/kept.txt") == "on disk"
    execution = resumed.run_code("y")
    assert execution.error is not None and execution.error.name == "NameError", execution
    step("pause(mode='filesystem'): files kept, memory cold-started on resume")

    resumed.run_code("z = 1")
    assert resumed.pause(keep_memory=False) is True
    again = CodeSandbox.connect(cells.sandbox_id, timeout=120)
    assert again.run_code("z").error is not None
    step("pause(keep_memory=False): the same")

    again.run_code("w = 3")
    assert again.pause(strict=True) is True, "strict: the guest agent (the server) answers"
    rebooted = CodeSandbox.connect(cells.sandbox_id, timeout=120, on_resume="reboot")
    assert rebooted.run_code("w").error is not None, "on_resume='reboot' ignores the memory"
    rebooted.run_code("w = 4")
    rebooted.pause()
    restored = CodeSandbox.connect(cells.sandbox_id, timeout=120)
    assert restored.run_code("w").text == "4", "a full pause still keeps memory"
    step("pause(strict=True), connect(on_resume='reboot'), and a full pause after them")
    restored.kill()

    lifecycle = {"on_timeout": {"action": "pause", "mode": "filesystem"}}
    timed = CodeSandbox.create(timeout=3, lifecycle=lifecycle)
    timed.run_code("v = 5")
    timed.files.write("/home/user/timeout.txt", "before the timeout")
    info = timed.get_info()
    assert info.lifecycle == {"on_timeout": "pause", "auto_resume": False}, info.lifecycle
    eventually("the timeout's pause", lambda: Sandbox.get_info(timed.sandbox_id).state == SandboxState.PAUSED)
    woken = CodeSandbox.connect(timed.sandbox_id, timeout=120)
    assert woken.files.read("/home/user/timeout.txt") == "before the timeout"
    assert woken.run_code("v").error is not None
    step("lifecycle on_timeout {'action': 'pause', 'mode': 'filesystem'}: paused files-only by the timeout")
    woken.kill()

    try:
        Sandbox.create(lifecycle={**lifecycle, "auto_resume": True})
        raise AssertionError("auto_resume with a filesystem pause was sent")
    except InvalidArgumentException:
        pass
    step("auto_resume with mode 'filesystem' is refused")


def metrics_and_logs() -> None:
    sandbox = Sandbox.create(timeout=120)
    sandbox.files.write("/home/user/disk.bin", b"\0" * 300_000)
    sandbox.commands.run("seq 1 3000000 | wc -l")
    failed = sandbox.commands.run("exit 3", background=True)
    try:
        failed.wait()
    except Exception:
        pass
    metrics = eventually("three samples", lambda: (lambda m: m if len(m) >= 3 else None)(sandbox.get_metrics()))
    assert all(m.cpu_count == 1 and m.mem_total > 0 and m.disk_total > 0 for m in metrics), metrics
    assert max(m.disk_used for m in metrics) >= 300_000, metrics
    step(f"get_metrics: {len(metrics)} samples, disk {max(m.disk_used for m in metrics)} bytes")

    # CPU: a busy command shows in the samples taken while it runs.
    busy = sandbox.commands.run("seq 1 30000000 | wc -l", background=True)
    time.sleep(2.5)
    busy.kill()
    recent = sandbox.get_metrics()
    assert max(m.cpu_used_pct for m in recent) > 20, [m.cpu_used_pct for m in recent]
    step(f"a busy command shows as CPU: up to {max(m.cpu_used_pct for m in recent):.0f}%")

    cells = CodeSandbox.create(timeout=120)
    cells.run_code("data = bytearray(32 * 1024 * 1024)")
    memory = eventually(
        "a memory sample of the interpreter",
        lambda: max((m.mem_used for m in cells.get_metrics()), default=0) > 32 * 1024 * 1024,
    )
    assert memory
    step("memory: the interpreter's linear memory (> 32 MiB after allocating 32 MiB)")

    start = metrics[-1].timestamp
    windowed = Sandbox.get_metrics(sandbox.sandbox_id, start=start)
    assert windowed and all(m.timestamp >= start.replace(microsecond=0) for m in windowed)
    client = api_client()
    bulk = get_sandboxes_metrics.sync_detailed(client=client, sandbox_ids=[sandbox.sandbox_id, cells.sandbox_id])
    assert bulk.status_code == 200, bulk
    assert set(bulk.parsed.sandboxes) == {sandbox.sandbox_id, cells.sandbox_id}, bulk.parsed
    step("metrics: a time window, and the bulk form for two sandboxes")

    sandbox.pause()
    Sandbox.connect(sandbox.sandbox_id, timeout=60)
    logs = get_v_2_sandboxes_sandbox_id_logs.sync_detailed(sandbox.sandbox_id, client=client)
    assert logs.status_code == 200, logs
    kinds = [entry.fields["event"] for entry in logs.parsed.logs]
    for kind in ("created", "command_started", "command_ended", "paused", "resumed"):
        assert kind in kinds, kinds
    ended = [e for e in logs.parsed.logs if e.fields["event"] == "command_ended"]
    assert any(e.fields["exitCode"] == "3" and e.level.value == "warn" for e in ended), ended
    warnings = get_v_2_sandboxes_sandbox_id_logs.sync_detailed(sandbox.sandbox_id, client=client, level=LogLevel.WARN)
    assert {e.level.value for e in warnings.parsed.logs} == {"warn"}, warnings.parsed
    old = get_sandboxes_sandbox_id_logs.sync_detailed(sandbox.sandbox_id, client=client)
    assert old.status_code == 200 and len(old.parsed.log_entries) == len(logs.parsed.logs)
    step(f"logs: {len(kinds)} events of its own ({', '.join(sorted(set(kinds)))})")

    timed = Sandbox.create(timeout=2, lifecycle={"on_timeout": "pause"})
    eventually("the timeout's pause", lambda: Sandbox.get_info(timed.sandbox_id).state == SandboxState.PAUSED)
    timed_logs = get_v_2_sandboxes_sandbox_id_logs.sync_detailed(timed.sandbox_id, client=client)
    timed_kinds = [entry.fields["event"] for entry in timed_logs.parsed.logs]
    assert timed_kinds[-2:] == ["timeout", "paused"], timed_kinds
    Sandbox.kill(timed.sandbox_id)
    gone = get_v_2_sandboxes_sandbox_id_logs.sync_detailed(timed.sandbox_id, client=client)
    assert gone.status_code == 404, "a killed sandbox's log goes with it"
    step("logs: a timeout is logged, then the pause it caused; a killed sandbox's log is 404")
    for s in (sandbox, cells):
        s.kill()


def watchers_and_write_files() -> None:
    sandbox = Sandbox.create(timeout=120)
    sandbox.files.make_dir("/home/user/watched")
    recursive = sandbox.files.watch_dir("/home/user/watched", recursive=True)
    flat = sandbox.files.watch_dir("/home/user/watched")
    sandbox.files.write("/home/user/watched/a.txt", "hello")
    sandbox.commands.run("mkdir -p /home/user/watched/sub && echo deep > /home/user/watched/sub/b.txt")
    events = recursive.get_new_events()
    seen = {(e.name, e.type) for e in events}
    for expected in (
        ("a.txt", FilesystemEventType.CREATE),
        ("a.txt", FilesystemEventType.WRITE),
        ("sub", FilesystemEventType.CREATE),
        ("sub/b.txt", FilesystemEventType.CREATE),
    ):
        assert expected in seen, (expected, seen)
    assert not any(e.name.startswith("sub/") for e in flat.get_new_events()), "a flat watcher sees no subdirectory"
    sandbox.files.rename("/home/user/watched/a.txt", "/home/user/watched/c.txt")
    sandbox.files.remove("/home/user/watched/sub/b.txt")
    later = {(e.name, e.type) for e in recursive.get_new_events()}
    assert ("a.txt", FilesystemEventType.RENAME) in later and ("c.txt", FilesystemEventType.CREATE) in later, later
    assert ("sub/b.txt", FilesystemEventType.REMOVE) in later, later
    recursive.stop()
    flat.stop()
    step("watch_dir (CreateWatcher/GetWatcherEvents): create, write, rename, remove, recursive and not")

    written = sandbox.files.write_files(
        [
            WriteEntry(path="/home/user/many/one.txt", data="1"),
            WriteEntry(path="/home/user/many/two.bin", data=b"\x002"),
        ]
    )
    assert sorted(w.path for w in written) == ["/home/user/many/one.txt", "/home/user/many/two.bin"], written
    assert sandbox.commands.run("cat /home/user/many/one.txt").stdout == "1"
    assert sandbox.files.read("/home/user/many/two.bin", format="bytes") == b"\x002"
    step("write_files: two files in one request")

    async def stream() -> None:
        connected = await AsyncSandbox.connect(sandbox.sandbox_id)
        seen = []
        handle = await connected.files.watch_dir("/home/user/many", on_event=seen.append, recursive=True)
        await connected.files.write("/home/user/many/three.txt", "3")
        deadline = time.monotonic() + 10
        while not any(e.name == "three.txt" for e in seen) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await handle.stop()
        assert ("three.txt", FilesystemEventType.CREATE) in {(e.name, e.type) for e in seen}, seen

    asyncio.run(stream())
    step("watch_dir (WatchDir stream, AsyncSandbox): events as they happen")
    sandbox.kill()


def volumes() -> None:
    volume = Volume.create(f"vol-{TAG}")
    assert volume.volume_id.startswith("vol_") and volume.name == f"vol-{TAG}" and volume.token
    volume.write_file("/seed/hello.txt", "from the volume")
    volume.make_dir("/made")
    assert {e.name for e in volume.list("/")} == {"seed", "made"}
    assert volume.get_info("/seed/hello.txt").size == len("from the volume")
    assert volume.exists("/made") and not volume.exists("/nothing")
    volume.update_metadata("/seed/hello.txt", mode=0o600)
    assert volume.get_info("/seed/hello.txt").mode == 0o600
    step("Volume.create and its file API: write, make_dir, list, get_info, exists, update_metadata")

    first = Sandbox.create(timeout=120, volume_mounts={"/data": volume})
    assert first.commands.run("cat /data/seed/hello.txt").stdout == "from the volume"
    first.commands.run("echo written by a sandbox > /data/shared.txt")
    assert volume.read_file("/shared.txt") == "written by a sandbox\n"
    second = Sandbox.create(timeout=120, volume_mounts={"/mnt/vol": volume.name})
    assert second.files.read("/mnt/vol/shared.txt") == "written by a sandbox\n"
    second.files.write("/mnt/vol/from-files-api.txt", "through envd")
    assert first.commands.run("cat /data/from-files-api.txt").stdout == "through envd"
    info = first.get_info()
    assert info.volume_mounts == [{"name": volume.name, "path": "/data"}], info.volume_mounts
    step("mounted read-write into two sandboxes at once; the envd file API writes through the mount")

    first.commands.run("echo root file > /home/user/own.txt")
    assert first.pause() is True
    volume.write_file("/while-paused.txt", "changed while paused")
    resumed = Sandbox.connect(first.sandbox_id, timeout=60)
    assert resumed.commands.run("cat /data/while-paused.txt").stdout == "changed while paused"
    assert resumed.commands.run("cat /home/user/own.txt").stdout == "root file\n"
    step("pause/resume keeps the mount, and the volume is not in the blob (a change made while paused shows)")

    try:
        Volume.destroy(volume.volume_id)
        raise AssertionError("a mounted volume was destroyed")
    except VolumeException:
        pass
    resumed.kill()
    second.kill()
    assert volume.read_file("/shared.txt") == "written by a sandbox\n", "kill leaves the volume intact"
    again = Volume.connect(volume.volume_id)
    assert again.name == volume.name and volume.volume_id in [v.volume_id for v in Volume.list()]
    volume.remove("/made")
    assert not volume.exists("/made")
    assert Volume.destroy(volume.volume_id) is True
    assert Volume.destroy(volume.volume_id) is False
    step("destroy refused while mounted; kill keeps the volume; connect, list, remove, destroy")


def control_plane() -> None:
    sandbox = Sandbox.create(
        timeout=60,
        network={"allow_out": ["1.1.1.1", "example.com"], "deny_out": ["0.0.0.0/0"]},
        allow_internet_access=False,
    )
    info = sandbox.get_info()
    assert info.envd_version == "0.5.7" and info.state == SandboxState.RUNNING
    assert info.lifecycle == {"on_timeout": "kill", "auto_resume": False}, info.lifecycle
    assert info.network["allow_out"] == ["1.1.1.1", "example.com"], info.network
    assert info.allow_internet_access is False
    sandbox.update_network({"allow_out": ["8.8.8.8/32"]})
    updated = sandbox.get_info().network
    assert updated["allow_out"] == ["8.8.8.8/32"] and "deny_out" not in updated, updated
    step("network: stored at create and by update_network, reported by get_info")

    before = sandbox.get_info().end_at
    sandbox.set_timeout(600)
    assert sandbox.get_info().end_at > before
    refreshed = post_sandboxes_sandbox_id_refreshes.sync_detailed(
        sandbox.sandbox_id, client=api_client(), body=SandboxRefreshRequest(duration=1200)
    )
    assert refreshed.status_code == 204, refreshed
    assert (sandbox.get_info().end_at - before).total_seconds() > 1100
    unknown = post_sandboxes_sandbox_id_refreshes.sync_detailed(
        "nosuchsandbox", client=api_client(), body=SandboxRefreshRequest(duration=1)
    )
    assert unknown.status_code == 404
    step("set_timeout and refreshes move the end time; an unknown sandbox is 404")
    sandbox.kill()


def main() -> int:
    for section in (snapshots, forks, filesystem_pause, metrics_and_logs, watchers_and_write_files, volumes, control_plane):
        step(f"--- {section.__name__}")
        section()
    return 0


if __name__ == "__main__":
    sys.exit(main())
