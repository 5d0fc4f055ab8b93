"""`run_code` with the real `e2b-code-interpreter` Python SDK against a local Stasis server: a variable
defined in a cell survives a pause and a resume, contexts of both languages work, errors come back as
Jupyter reports them.

Run by `tests/sdk/run.sh`, which starts the server and sets E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
"""

import sys

from e2b_code_interpreter import Sandbox


def step(message: str) -> None:
    print(f"code interpreter: {message}", flush=True)


def main() -> int:
    sandbox = Sandbox.create(timeout=120)  # template code-interpreter-v1
    step(f"created {sandbox.sandbox_id}")

    first = sandbox.run_code("import math\nx = 41\nprint('defined x')")
    assert first.error is None, first.error
    assert first.logs.stdout == ["defined x\n"], first.logs
    step("defined x = 41")

    assert sandbox.pause() is True
    step("paused")
    resumed = Sandbox.connect(sandbox.sandbox_id, timeout=60)
    step("connected (resumed)")

    kept = resumed.run_code("x + 1")
    assert kept.error is None, kept.error
    assert kept.text == "42", kept
    step(f"x + 1 after the resume = {kept.text}")

    failed = resumed.run_code("math.sqrt(-1)")
    assert failed.error is not None and failed.error.name == "ValueError", failed
    assert "Traceback" in failed.error.traceback, failed.error.traceback
    step(f"an exception comes back as {failed.error.name}: {failed.error.value}")

    js = resumed.create_code_context(language="js")
    resumed.run_code("const greeting = 'hi from ' + 'boa'", context=js)
    said = resumed.run_code("greeting", context=js)
    assert said.text == '"hi from boa"', said
    step(f"a JavaScript context answers {said.text}")
    contexts = {c.id for c in resumed.list_code_contexts()}
    assert js.id in contexts, contexts
    resumed.remove_code_context(js)
    assert js.id not in {c.id for c in resumed.list_code_contexts()}
    step("listed and removed the JavaScript context")

    resumed.kill()
    step("killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
