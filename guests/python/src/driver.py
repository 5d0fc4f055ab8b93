# The Python half of the interpreter guest: runs the code objects the Rust half compiled, with the cell's
# environment variables, and turns the outcome into plain values (the repr of the trailing expression, or
# the error's name, message and formatted traceback). It runs in a namespace of its own, apart from the
# user's `__main__`, so cells cannot see or break it by accident.

import builtins
import linecache
import os
import sys
import traceback
import types

# Every Python call nests a few RustPython functions, whose frames live on wasmtime's native stack (512 KiB
# unless the engine sets `max_wasm_stack`), measured at up to ~2 KiB per Python frame (a method called with
# **kwargs from a comprehension). Past it the call traps and the context is lost; under this limit deep
# recursion is a RecursionError the cell can catch. With a 2 MiB stack, CPython's 1000 is safe too.
sys.setrecursionlimit(200)

# The user's namespace is a real `__main__` module, so that `pickle`, `dataclasses` and friends find what
# the cells define.
main = types.ModuleType("__main__")
main.__dict__["__builtins__"] = builtins
sys.modules["__main__"] = main
namespace = main.__dict__


def register(filename, source):
    """Keeps a cell's source for tracebacks, which show the lines of every cell they pass through."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def describe(error, skip):
    """(name, message, traceback text) of an exception, without its first `skip` frames (the driver's)."""
    tb = error.__traceback__
    for _ in range(skip):
        if tb is not None:
            tb = tb.tb_next
    text = "".join(traceback.format_exception(type(error), error, tb))
    return (type(error).__name__, str(error), text)


def flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def run(body, tail, env):
    """Runs a cell's statements, then evaluates its trailing expression; returns (repr or None, error or None)."""
    saved = {}
    try:
        for key, value in env.items():
            saved[key] = os.environ.get(key)
            os.environ[key] = value
        if body is not None:
            exec(body, namespace)
        if tail is not None:
            value = eval(tail, namespace)
            if value is not None:
                return (repr(value), None)
        return (None, None)
    except BaseException as error:
        return (None, describe(error, 1))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        flush()


def failed(error):
    """The outcome of a cell that did not compile."""
    flush()
    return (None, describe(error, 0))
