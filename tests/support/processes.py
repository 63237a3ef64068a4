# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""Fresh Python processes for the tests: one program at a time (`run_python`), or many command lines for the price of
one interpreter start-up (`fork_runner` + `run_forked`: torch and diffusers imported once, each command line run in a
forked child); and a free port for a launcher or a server."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (the OS's pick; free at least until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(code: str, cwd=None, env=None, timeout: int = 300) -> str:
    """Run `code` in a fresh Python process; return its stdout, fail the test with its stderr otherwise."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=full_env, capture_output=True, text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        pytest.fail(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def fork_runner(setup: str, main: str, prog: str) -> str:
    """Python code for `python -c CODE RUNS FOLDER`: run `setup` once (the slow imports), then each command line of
    RUNS (JSON {name: argv}) in a forked child, as `sys.exit(<main>(argv))` would, its output in FOLDER/<name>.stdout
    and .stderr; print the exit codes as JSON. Many command lines for the price of one interpreter start-up."""
    return textwrap.dedent("""
        import json, os, sys, traceback
        {setup}

        runs, folder = json.loads(sys.argv[1]), sys.argv[2]
        codes = {{}}
        for name, argv in runs.items():
            sys.stdout.flush(); sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                for fd, suffix in ((1, "stdout"), (2, "stderr")):
                    path = os.path.join(folder, f"{{name}}.{{suffix}}")
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.argv = [{prog!r}, *argv]
                try:  # what `sys.exit(main())` does, and what the interpreter prints if it raises
                    code = {main}(argv)
                except SystemExit as exit:
                    code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                sys.stdout.flush(); sys.stderr.flush()
                os._exit(code or 0)
            codes[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        print(json.dumps(codes))
    """).format(setup=setup, main=main, prog=prog)


def run_forked(runner: str, runs: dict, folder, cwd=None, env=None, timeout: int = 300) -> dict:
    """Run a `fork_runner` program over `runs` ({name: argv}); their output lands in FOLDER/<name>.stdout and
    .stderr. Returns {name: exit code}; fails the test if the runner itself fails."""
    result = subprocess.run([sys.executable, "-c", runner, json.dumps(runs), str(folder)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"the fork runner failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
