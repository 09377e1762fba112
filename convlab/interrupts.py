"""Ctrl-C while training: acknowledged at once, acted on at the next safe point.

A KeyboardInterrupt raised wherever Python happens to be (inside an update rule, halfway
through writing the parameters) would leave a model no one can trust. So while training
runs, the first Ctrl-C only records the request and says so; the training loop calls
:meth:`GracefulInterrupt.check` at its safe points (after each step and each evaluation
batch, well under a second apart), which raises KeyboardInterrupt with the state
consistent, ready to be saved. A second Ctrl-C means "now": :class:`StopNow` is raised at
once, wherever the loop is.
"""

import signal
import threading

__all__ = ["GracefulInterrupt", "StopNow"]


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: training stops at once, possibly mid-step, so the state in memory
    is not saved (the last checkpoint stays as it was)."""


class GracefulInterrupt:
    """Context manager that takes over SIGINT while it is entered (main thread only: other
    threads cannot receive signals, and there it changes nothing).

    ``say(line)`` reports the first Ctrl-C; ``requested`` tells whether one came;
    ``check()`` raises KeyboardInterrupt if so. The previous handler is restored on exit.
    """

    def __init__(self, say=print):
        self.say = say
        self.requested = False
        self._previous = None

    def __enter__(self):
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        return False

    def _on_sigint(self, *_):
        if self.requested:
            raise StopNow
        self.requested = True
        self.say("Interrupt: stopping after this step (press Ctrl-C again to stop now)")

    def check(self):
        """Raise KeyboardInterrupt if a Ctrl-C came since the context was entered."""
        if self.requested:
            raise KeyboardInterrupt
