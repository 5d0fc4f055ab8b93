"""A service in a sandbox, reached through `sandbox.get_host(port)` with the real E2B Python SDK against a
local Stasis server: answered while the sandbox runs, a clear failure while it is paused, answered again
after `Sandbox.connect`, and — with `lifecycle={"on_timeout": "pause", "auto_resume": True}` — a request to
the paused service resumes the sandbox and is answered.

The service is the `net` test guest (`net http PORT`), registered as a template with `POST /templates`, so
a sandbox's shell runs it by name. Run by `tests/sdk/run.sh`, which starts the server and sets E2B_API_URL,
E2B_SANDBOX_URL, E2B_API_KEY and NET_WASM (the guest's path). Exits non-zero with the failing step.
"""

import http.client
import os
import time
import urllib.request

from e2b import Sandbox

PORT = 8000


def step(message: str) -> None:
    print(f"python (network): {message}", flush=True)


def register_service() -> None:
    with open(os.environ["NET_WASM"], "rb") as f:
        wasm = f.read()
    request = urllib.request.Request(
        os.environ["E2B_API_URL"] + "/templates?name=net",
        data=wasm,
        method="POST",
        headers={"X-API-KEY": os.environ["E2B_API_KEY"], "Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status in (200, 201), response.status


def get(host: str, path: str = "/") -> tuple[int, str]:
    """GET `path` on `host` as get_host gives it: `<port>-<id>.<domain>`, the domain being this server's
    `localhost:<port>` (which browsers and curl resolve to loopback themselves; Python's resolver may not,
    so the connection goes to the domain and the Host header names the sandbox)."""
    _, domain = host.split(".", 1)
    name, _, port = domain.rpartition(":")
    connection = http.client.HTTPConnection(name, int(port), timeout=60)
    try:
        connection.request("GET", path, headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def answered(host: str, path: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        status, body = get(host, path)
        if status == 200:
            return body
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.2)


def main() -> None:
    register_service()
    sandbox = Sandbox.create(timeout=300)
    try:
        host = sandbox.get_host(PORT)
        assert host.startswith(f"{PORT}-{sandbox.sandbox_id}.localhost:"), host
        status, body = get(host)
        assert status == 502 and f"nothing listens on port {PORT}" in body, (status, body)
        step(f"get_host({PORT}) is {host}; nothing listens there yet: 502")

        sandbox.commands.run(f"net http {PORT}", background=True)
        body = answered(host, "/hello")
        assert "GET /hello" in body, body
        step("the service answers through get_host")

        assert sandbox.pause() is True
        status, body = get(host)
        assert status == 502 and sandbox.sandbox_id in body and "paused" in body, (status, body)
        step("paused: 502 naming the paused sandbox")

        Sandbox.connect(sandbox.sandbox_id, timeout=300)
        body = answered(host, "/again")
        assert "GET /again" in body, body
        step("after connect the service answers again")
    finally:
        sandbox.kill()

    sandbox = Sandbox.create(timeout=300, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        host = sandbox.get_host(PORT)
        sandbox.commands.run(f"net http {PORT}", background=True)
        answered(host, "/")
        assert sandbox.pause() is True
        body = answered(host, "/woken")
        assert "GET /woken" in body, body
        assert sandbox.get_info().state.value == "running", sandbox.get_info().state
        step("auto_resume: a request to the paused service resumed it and was answered")
    finally:
        sandbox.kill()


if __name__ == "__main__":
    main()
