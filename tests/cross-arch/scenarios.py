#!/usr/bin/env python3
"""Moves sandboxes between two Stasis servers of different CPU architectures and checks what they kept.

    scenarios.py ARCH=URL ARCH=URL [--only NAME,...]

Both servers take the API key in STASIS_API_KEY. Every scenario runs in both directions: a sandbox is
created and brought to a known state on one server, paused there, its blob exported
(`GET /sandboxes/{id}/blob`), imported into the other server (`POST /sandboxes/import`), resumed there and
checked. One line per scenario and direction, PASS or FAIL with its time; the exit status is the number of
failures (0: all passed). Only the Python standard library is used, speaking the same HTTP API (REST,
Connect and the code-interpreter plane) as the E2B SDKs.
"""

import base64
import hashlib
import http.client
import json
import os
import struct
import sys
import time
import traceback
import urllib.parse

# Requests may wait for a compilation of the Python guest under emulation: minutes.
TIMEOUT = 1800


class Failure(Exception):
    """A check that did not hold."""


def check(condition, message):
    if not condition:
        raise Failure(message)


class Server:
    """One Stasis server: its architecture's name and its address."""

    def __init__(self, arch, url, key):
        self.arch = arch
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname
        self.port = parsed.port
        self.key = key

    def connection(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)

    def request(self, method, path, body=None, headers=None):
        """One request; answers (status, body bytes)."""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def api(self, method, path, payload=None, raw=None, expect=(200, 201, 204)):
        """A control-plane call with the API key; JSON in, JSON (or bytes for `raw`) out."""
        headers = {"X-API-KEY": self.key}
        body = None
        if raw is not None:
            headers["Content-Type"] = "application/octet-stream"
            body = raw
        elif payload is not None:
            headers["Content-Type"] = "application/json"
            body = json.dumps(payload).encode()
        status, data = self.request(method, path, body, headers)
        check(status in expect, f"{self.arch}: {method} {path} answered {status}: {data[:500]!r}")
        return data

    def api_json(self, method, path, payload=None, raw=None):
        data = self.api(method, path, payload, raw)
        return json.loads(data) if data else None


class Sandbox:
    """A sandbox on one server, with its envd access token."""

    def __init__(self, server, sandbox_id, token):
        self.server = server
        self.id = sandbox_id
        self.token = token

    @classmethod
    def create(cls, server, template):
        info = server.api_json("POST", "/sandboxes", {"templateID": template, "timeout": 3600})
        return cls(server, info["sandboxID"], info["envdAccessToken"])

    def headers(self, content_type="application/json"):
        return {
            "E2b-Sandbox-Id": self.id,
            "X-Access-Token": self.token,
            "Content-Type": content_type,
        }

    def envd(self, path, payload):
        status, data = self.server.request("POST", path, json.dumps(payload).encode(), self.headers())
        check(status == 200, f"{self.server.arch}: {path} answered {status}: {data[:500]!r}")
        return json.loads(data)

    def read_file(self, path):
        """The file's bytes, or None when it does not exist."""
        query = urllib.parse.urlencode({"path": path})
        status, data = self.server.request("GET", f"/files?{query}", None, self.headers())
        if status == 404:
            return None
        check(status == 200, f"{self.server.arch}: GET /files {path} answered {status}: {data[:300]!r}")
        return data

    def start(self, line, tag):
        """Starts `sh -c LINE`; answers the open event stream (see `Events`)."""
        message = {"process": {"cmd": "/bin/bash", "args": ["-l", "-c", line], "envs": {}}, "tag": tag}
        return Events(self, "/process.Process/Start", message)

    def attach(self, pid):
        """Re-attaches to a running process's output."""
        return Events(self, "/process.Process/Connect", {"process": {"pid": pid}})

    def execute(self, code, context_id=None, language=None):
        """Runs one code-interpreter cell; answers its events."""
        body = {"code": code}
        if context_id:
            body["context_id"] = context_id
        if language:
            body["language"] = language
        status, data = self.server.request("POST", "/execute", json.dumps(body).encode(), self.headers())
        check(status == 200, f"{self.server.arch}: /execute answered {status}: {data[:500]!r}")
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def result(self, code, context_id=None, language=None):
        """The text of a cell's main result; a cell error fails the scenario."""
        events = self.execute(code, context_id, language)
        errors = [e for e in events if e.get("type") == "error"]
        check(not errors, f"{self.server.arch}: cell {code!r} failed: {errors}")
        results = [e.get("text") for e in events if e.get("type") == "result" and e.get("is_main_result")]
        check(results, f"{self.server.arch}: cell {code!r} gave no result: {events}")
        return results[0]

    def new_context(self, language):
        status, data = self.server.request(
            "POST", "/contexts", json.dumps({"language": language}).encode(), self.headers()
        )
        check(status in (200, 201), f"{self.server.arch}: POST /contexts answered {status}: {data[:300]!r}")
        return json.loads(data)["id"]

    def pause(self):
        self.server.api("POST", f"/sandboxes/{self.id}/pause", {}, expect=(204,))

    def kill(self):
        try:
            self.server.request("DELETE", f"/sandboxes/{self.id}", None, {"X-API-KEY": self.server.key})
        except OSError:
            pass


class Events:
    """A Connect server stream of process events (JSON envelopes), read as they come."""

    def __init__(self, sandbox, path, message):
        self.conn = sandbox.server.connection()
        payload = json.dumps(message).encode()
        self.conn.request(
            "POST", path, body=struct.pack(">BI", 0, len(payload)) + payload,
            headers=sandbox.headers("application/connect+json"),
        )
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise Failure(f"{sandbox.server.arch}: {path} answered {self.response.status}: "
                          f"{self.response.read()[:300]!r}")
        self.arch = sandbox.server.arch

    def next(self):
        """The next event, or None at the end of the stream."""
        head = self.response.read(5)
        if len(head) < 5:
            return None
        flags, length = struct.unpack(">BI", head)
        body = json.loads(self.response.read(length))
        if flags & 2:  # the end-of-stream envelope: an error, or {} at a clean end
            check(not body.get("error") or body["error"].get("code") == "unavailable",
                  f"{self.arch}: the stream ended with {body}")
            return None
        return body.get("event", body)

    def stdout_until(self, wanted):
        """Reads events until the stdout seen so far ends with `wanted`; answers (stdout, end event)."""
        out = ""
        while True:
            event = self.next()
            if event is None:
                return out, None
            if "data" in event and "stdout" in event["data"]:
                out += base64.b64decode(event["data"]["stdout"]).decode()
            if "end" in event:
                return out, event["end"]
            if wanted is not None and out.endswith(wanted):
                return out, None

    def close(self):
        self.conn.close()


def move(sandbox, target):
    """Pauses `sandbox`, carries its blob to `target` and resumes it there; answers the new sandbox."""
    sandbox.pause()
    blob = sandbox.server.api("GET", f"/sandboxes/{sandbox.id}/blob")
    check(blob[:8] == b"\x89STASIS\n", f"{sandbox.server.arch}: the export is not a blob")
    imported = target.api_json("POST", "/sandboxes/import", raw=blob)
    new_id = imported["sandboxID"]
    connected = target.api_json("POST", f"/sandboxes/{new_id}/connect", {"timeout": 3600})
    sandbox.kill()
    moved = Sandbox(target, new_id, connected["envdAccessToken"])
    moved.blob_bytes = len(blob)
    moved.blob_sha256 = hashlib.sha256(blob).hexdigest()[:12]
    return moved


# --- the scenarios: each takes (source server, target server) and answers a short summary ---------------


def python_context(source, target):
    """A Python context's variables, functions, a class instance and imported modules survive the move."""
    sandbox = Sandbox.create(source, "code-interpreter-v1")
    setup = (
        "import json, math, hashlib\n"
        "from collections import Counter\n"
        "x = 41\n"
        "words = Counter('the quick brown fox jumps over the lazy dog the end'.split())\n"
        "def double(n):\n"
        "    return n * 2\n"
        "class Account:\n"
        "    def __init__(self):\n"
        "        self.balance = 0\n"
        "    def deposit(self, n):\n"
        "        self.balance += n\n"
        "        return self.balance\n"
        "acct = Account()\n"
        "acct.deposit(100)\n"
        "ratio = math.pi / 3\n"
        "digest = hashlib.sha256(b'stasis').hexdigest()[:16]\n"
        "digest"
    )
    before_digest = sandbox.result(setup)
    before_ratio = sandbox.result("repr(ratio)")
    moved = move(sandbox, target)
    try:
        check(moved.result("x + 1") == "42", "x was lost")
        check(moved.result("double(21)") == "42", "the function was lost")
        check(moved.result("acct.deposit(23)") == "123", "the object was lost")
        check(moved.result("words['the']") == "3", "the Counter was lost")
        check(moved.result("repr(ratio)") == before_ratio, "the float changed")
        check(moved.result("digest") == before_digest, "the string changed")
        check(moved.result("json.dumps({'sqrt2': round(math.sqrt(2), 6)})") == "'{\"sqrt2\": 1.414214}'",
              "an imported module does not work")
        check(moved.result("hashlib.sha256(b'stasis').hexdigest()[:16] == digest") == "True",
              "hashlib computes differently")
    finally:
        moved.kill()
    return f"x, a function, an object, imports kept; blob {moved.blob_bytes >> 10} KiB"


def javascript_context(source, target):
    """A JavaScript context's variables, closures and objects survive the move."""
    sandbox = Sandbox.create(source, "code-interpreter-v1")
    ctx = sandbox.new_context("js")
    setup = (
        "var counter = 41;\n"
        "var inc = (function () { var hidden = 0; return function () { hidden += 1; return ++counter + hidden * 0; }; })();\n"
        "var store = { items: [1, 2, 3], name: 'stasis' };\n"
        "store.items.push(Math.PI);\n"
        "JSON.stringify(store)"
    )
    before = sandbox.result(setup, context_id=ctx)
    moved = move(sandbox, target)
    try:
        check(moved.result("inc()", context_id=ctx) == "42", "the counter or the closure was lost")
        check(moved.result("inc()", context_id=ctx) == "43", "the counter did not go on")
        after = moved.result("JSON.stringify(store)", context_id=ctx)
        check(after == before, f"the object changed: {before} -> {after}")
    finally:
        moved.kill()
    return f"a counter, a closure, an object kept; blob {moved.blob_bytes >> 10} KiB"


def shell_loop(source, target):
    """A shell command paused between sleeps of its loop finishes on the other machine, every tick once."""
    sandbox = Sandbox.create(source, "base")
    ticks = 10
    line = (
        f"i=0; while [ $i -lt {ticks} ]; do i=$((i+1)); echo $i >> /tmp/tick; echo $i; sleep 0.5; done; "
        "echo finished > /tmp/done"
    )
    events = sandbox.start(line, "mover")
    start = events.next()
    check(start and "start" in start, f"no start event: {start}")
    pid = start["start"]["pid"]
    out, end = events.stdout_until("2\n")
    check(end is None and out == "1\n2\n", f"before the pause: {out!r} {end}")
    moved = move(sandbox, target)
    events.close()
    try:
        listed = moved.envd("/process.Process/List", {})["processes"]
        check([p.get("pid") for p in listed] == [pid] and listed[0].get("tag") == "mover",
              f"the command is not listed after the move: {listed}")
        attached = moved.attach(pid)
        rest, end = attached.stdout_until(None)
        attached.close()
        check(end is not None and end.get("exitCode", 0) == 0 and end.get("exited", True),
              f"the moved command did not exit 0: {end}")
        numbers = [int(n) for n in rest.split()]
        check(numbers == list(range(ticks - len(numbers) + 1, ticks + 1)) and len(numbers) >= 1,
              f"output after the move: {rest!r}")
        check(moved.read_file("/tmp/done") == b"finished\n", "the command did not finish")
        tick = moved.read_file("/tmp/tick")
        expected = "".join(f"{i}\n" for i in range(1, ticks + 1)).encode()
        check(tick == expected, f"/tmp/tick is {tick!r}")
    finally:
        moved.kill()
    return f"paused after tick 2, ticks 3-{ticks} and the end ran there, exit 0"


def shell_files(source, target):
    """Files and directories a command made, with their modes, survive the move (the server side of the
    persistence example: the sandbox's directory travels in the blob)."""
    sandbox = Sandbox.create(source, "base")
    setup = ("echo \"hello from $(uname -m)\" > /tmp/message.txt; mkdir -p /tmp/d/e; seq 1 5000 > /tmp/d/e/n; "
             "chmod 600 /tmp/d/e/n; echo ok")
    events = sandbox.start(setup, "w")
    out, end = events.stdout_until(None)
    events.close()
    check(out == "ok\n", f"setup: {out!r} {end}")
    listing = "ls -l /tmp/d/e; wc -l < /tmp/d/e/n; cat /tmp/message.txt"
    events = sandbox.start(listing, "r")
    before, _ = events.stdout_until(None)
    events.close()
    moved = move(sandbox, target)
    try:
        events = moved.start(listing, "r")
        after, end = events.stdout_until(None)
        events.close()
        check(after == before and "5000" in after, f"the files changed: {before!r} -> {after!r}")
    finally:
        moved.kill()
    return "a file, directories, a file's mode kept"


SCENARIOS = [
    ("shell files", shell_files),
    ("shell loop with sleeps", shell_loop),
    ("python context", python_context),
    ("javascript context", javascript_context),
]


def main(argv):
    only = None
    servers = []
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--only":
            only = set(args.pop(0).split(","))
        else:
            arch, _, url = arg.partition("=")
            servers.append(Server(arch, url, os.environ["STASIS_API_KEY"]))
    if len(servers) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    failures = 0
    for name, scenario in SCENARIOS:
        if only and name not in only:
            continue
        for source, target in (servers, servers[::-1]):
            label = f"{name:<24} {source.arch:>7} -> {target.arch:<7}"
            started = time.monotonic()
            try:
                summary = scenario(source, target)
                verdict = "PASS"
            except Exception as error:  # every failure is reported, then the next scenario runs
                failures += 1
                verdict = "FAIL"
                summary = f"{type(error).__name__}: {error}"
                if not isinstance(error, Failure):
                    traceback.print_exc(file=sys.stderr)
            print(f"{verdict}  {label:<43} {time.monotonic() - started:7.1f} s  {summary}", flush=True)
    return min(failures, 100)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
