"""Run a Python script as ``python SCRIPT ARGS`` would, in a process forked from a server that has already imported
torch, Lightning and lit_robust: the benchmark smoke tests launch ~17 scripts, and a fresh interpreter spends 3-5 s
of each launch on those imports (most of the time of a smoke run).

The server is multiprocessing's ``forkserver``: a fresh interpreter (not a fork of the test process, so nothing the
tests changed — torch flags, seeds, loggers, CUDA — reaches the scripts), started once with this checkout on
``PYTHONPATH``. Each script then runs in a fork of it as ``__main__`` (``runpy``), with its own argv, working
directory, environment, stdout and stderr files, and exit status; its ``--jobs`` workers are spawned as usual.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PRELOAD = ["torch", "pytorch_lightning", "lit_robust", "torchvision", "sklearn", "tests._script_runner"]


def _main(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """In the forked process: the script as ``__main__``; exit status as the interpreter's would be."""
    import runpy
    import traceback

    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
        os.close(f)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    module = argv[0] == "-m"  # `python -m MODULE ARGS`: the working directory first on the path, argv[0] the file
    sys.argv = list(argv[1:] if module else argv)
    sys.path.insert(0, os.getcwd() if module else str(Path(argv[0]).resolve().parent))  # as python does
    code: object = 0
    try:
        if module:
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code
    except BaseException:  # noqa: BLE001 - an uncaught exception: traceback on stderr, status 1 (as python does)
        traceback.print_exc()
        code = 1
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code or 0)


class Launch:
    """A started script; :meth:`communicate` waits for it and returns a :class:`subprocess.CompletedProcess`."""

    def __init__(self, argv: Sequence[str], cwd: str | os.PathLike, env: dict[str, str], repo: Path) -> None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        self.args = [sys.executable, *map(str, argv)]
        self._dir = tempfile.TemporaryDirectory(prefix="script-")
        self._out, self._err = (os.path.join(self._dir.name, n) for n in ("stdout", "stderr"))
        for path in (self._out, self._err):
            open(path, "w").close()  # there even if the process dies before it runs the script
        before = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = os.pathsep.join([str(repo), *([before] if before else [])])  # the server's path
        try:
            self._proc = ctx.Process(target=_main, args=([str(a) for a in argv], str(cwd), dict(env), self._out,
                                                         self._err))
            self._proc.start()
        finally:
            if before is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = before

    def communicate(self, timeout: float) -> subprocess.CompletedProcess:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            self._proc.kill()
            self._proc.join()
            raise subprocess.TimeoutExpired(self.args, timeout)
        with open(self._out) as o, open(self._err) as e:
            run = subprocess.CompletedProcess(self.args, self._proc.exitcode, o.read(), e.read())
        self._dir.cleanup()
        return run


def run(argv: Sequence[str], cwd: str | os.PathLike, env: dict[str, str], repo: Path,
        timeout: float) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=cwd, env=env)``, forked;
    ``argv`` is ``[SCRIPT, *ARGS]`` or ``["-m", MODULE, *ARGS]``."""
    return Launch(argv, cwd, env, repo).communicate(timeout)
