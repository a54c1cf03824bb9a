"""Deadlines: a clock for a call's time limit, and compiled work that returns by it."""

import atexit
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import jax

_RUNNING = set()  # threads computing: some for a call that returned at its deadline


@atexit.register
def _finish_running():
    """Wait for computations left running (abandoned at a deadline, or begun by `Clock.start`
    and never waited for) before the interpreter exits: a JAX computation still running in a
    thread at exit aborts the process ("terminate called ...")."""
    for thread in list(_RUNNING):
        thread.join()


class OutOfTime(Exception):
    """The time limit ran out, or the next phase cannot fit in the time left."""


class Clock:
    """A call's deadline, `limit` seconds from now."""

    def __init__(self, limit):
        self.began = time.perf_counter()
        self.deadline = self.began + limit

    def seconds(self):
        return time.perf_counter() - self.began

    def left(self):
        return self.deadline - time.perf_counter()

    def fits(self, estimate):
        """Whether a phase estimated to take `estimate` seconds ends before the deadline."""
        return self.left() > estimate

    def check(self, estimate=0.0):
        """Raise OutOfTime unless a phase of `estimate` seconds fits."""
        if not self.fits(estimate):
            raise OutOfTime

    def run(self, fn, *args, **kwargs):
        """fn(*args, **kwargs) computed to the end, or OutOfTime at the deadline.

        A compiled JAX computation (and its compilation) cannot be interrupted, so it runs in a
        daemon thread that this call stops waiting for at the deadline: the call returns in
        time, while the abandoned computation finishes in the background (its result unused;
        the interpreter waits for it at exit).
        """
        return self._within(lambda: jax.block_until_ready(fn(*args, **kwargs)))

    def run_each(self, fn, calls, workers):
        """[fn(*args) for args in calls], at most `workers` computing at once (threads), or
        OutOfTime at the deadline, as `run`."""
        if len(calls) <= 1 or workers == 1:
            return [self.run(fn, *args) for args in calls]

        def work():
            with ThreadPoolExecutor(min(workers, len(calls))) as pool:
                futures = [pool.submit(lambda a: jax.block_until_ready(fn(*a)), args)
                           for args in calls]  # fmt: skip
                return [f.result() for f in futures]

        return self._within(work)

    def build(self, fn, *args, **kwargs):
        """Like `run`, for host work whose result is no tree of arrays: a solver model built
        with eager JAX calls (each compiled on first use, which can take seconds)."""
        return self._within(lambda: fn(*args, **kwargs))

    def start(self, fn, *args, **kwargs):
        """Begin fn(*args, **kwargs) now, in a daemon thread, and return a function that waits
        for its result as `run` does (OutOfTime at the deadline): to compile one computation
        while another runs."""
        return self._start(lambda: jax.block_until_ready(fn(*args, **kwargs)))

    def _within(self, work):
        return self._start(work)()

    def _start(self, work):
        self.check()
        result, done = {}, threading.Event()

        def compute():
            try:
                result["value"] = work()
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                result["error"] = e
            finally:
                done.set()
                _RUNNING.discard(thread)

        thread = threading.Thread(target=compute, daemon=True)
        _RUNNING.add(thread)
        thread.start()

        def wait():
            if not done.wait(max(self.left(), 0.0)):
                raise OutOfTime
            if "error" in result:
                raise result["error"]
            return result["value"]

        return wait
