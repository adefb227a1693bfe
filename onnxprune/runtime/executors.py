"""Where evaluations run: this process, local worker processes, or a Dask cluster.

:func:`executor` gives a ``concurrent.futures``-style executor (``submit``, futures with
``result()``). Tasks are module-level functions that take a picklable spec and build their
heavy state once per worker (:func:`onnxprune.runtime.scoring.evaluator_for`), so the same task
code runs everywhere:

* ``jobs=1``: in this process, one task at a time;
* ``jobs=N``: N local processes, forked where the platform can (so scripts need no
  ``if __name__ == "__main__"`` guard; the parent's sessions are not used in the children,
  which build their own), spawned elsewhere;
* ``scheduler="tcp://host:8786"``: a running Dask cluster (``pip install distributed``, the ``[dask]`` extra);
  ``scheduler="local"`` starts a local Dask cluster of ``jobs`` worker processes. Every worker
  must see the model and data files at the same paths (a shared file system), and have
  onnxprune installed.

Dask (https://distributed.dask.org) is used through ``Client.get_executor()``.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager

from ..errors import OnnxPruneError


class _Deferred(Future):
    """A future whose task runs, in this process, the first time it is asked for its result."""

    def __init__(self, fn, args, kwargs):
        super().__init__()
        self._call = (fn, args, kwargs)

    def run(self) -> None:
        if self._call is not None:
            fn, args, kwargs = self._call
            self._call = None
            try:
                self.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # delivered by result(), as a pool would
                self.set_exception(exc)

    def result(self, timeout=None):
        self.run()
        return super().result(timeout)

    def exception(self, timeout=None):
        self.run()
        return super().exception(timeout)


class InProcess:
    """``submit`` defers the task until its result is asked for (for ``jobs=1``): tasks run one
    at a time, in the order they are collected, so what is collected first is saved first."""

    def submit(self, fn, *args, **kwargs) -> Future:
        return _Deferred(fn, args, kwargs)


def completed(futures):
    """The ``futures`` as they finish (``concurrent.futures.as_completed``); in-process ones in
    the order given, each run when it is reached."""
    futures = list(futures)
    if all(isinstance(f, _Deferred) for f in futures):
        for future in futures:
            future.run()
            yield future
    else:
        yield from as_completed(futures)


@contextmanager
def executor(jobs: int = 1, scheduler: str | None = None):
    """An executor for ``jobs`` parallel tasks, or for the Dask ``scheduler`` (see the module
    doc). Errors (``OnnxPruneError``): ``jobs`` < 1, Dask not installed or not reachable."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise OnnxPruneError(f"{{jobs}} must be an integer >= 1, got {jobs}")
    if scheduler:
        with _dask(jobs, scheduler) as pool:
            yield pool
    elif jobs == 1:
        yield InProcess()
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context(method)) as pool:
            yield pool


@contextmanager
def _dask(jobs: int, scheduler: str):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise OnnxPruneError("{scheduler} needs Dask: pip install distributed") from None
    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout="10s")
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise OnnxPruneError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from None
    try:
        yield client.get_executor()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
