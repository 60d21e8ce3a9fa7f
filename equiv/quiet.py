"""What reaches stderr from the command line: equiv's own lines, and nothing of the frameworks'.

A user reads stderr for one line, the error, or for equiv's progress. The frameworks add their
own: TensorFlow's C++ logging (`I0000 ... oneDNN custom operations`, `E0000 ... cuInit`, some
printed before absl is initialised, which TF_CPP_MIN_LOG_LEVEL does not reach), Python
warnings (numpy overflow, tf_keras deprecations, torch's pickle FutureWarning) and framework
loggers. Unless the user asks (`-v`), `quiet()` drops them at their sources: TensorFlow's log
level before it is imported, the warnings filters and logging for the command's duration, and
native writes to file descriptor 2, while Python's `sys.stderr`, where equiv writes, stays on
the real stderr. A user's own TF_CPP_MIN_LOG_LEVEL is honoured: TensorFlow then logs as it says.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def quiet(verbose: bool = False) -> Iterator[None]:
    if verbose:
        yield
        return
    users_level = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # errors too: `E0000 ... failed call to cuInit`
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if users_level:
                yield
            else:
                with _native_stderr_dropped():
                    yield
    finally:
        logging.disable(previous)
        if not users_level:  # TensorFlow read it when imported; a later command decides afresh
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


@contextmanager
def _native_stderr_dropped() -> Iterator[None]:
    """Native code's writes to fd 2 go to /dev/null; `sys.stderr` keeps writing to the real one.

    Only where `sys.stderr` is fd 2 itself (a terminal, a pipe, a file); under a capture that
    replaced `sys.stderr` (pytest's capsys) fd 2 is left alone. A fatal signal still prints
    Python's traceback on the real stderr (faulthandler), so a native crash is not silent."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None
    if fd != 2:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    old = sys.stderr
    sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, encoding=old.encoding, errors=old.errors)
    had_faulthandler = faulthandler.is_enabled()
    faulthandler.enable(file=sys.stderr)
    try:
        yield
    finally:
        sys.stderr.flush()
        if had_faulthandler:
            faulthandler.enable(file=old)
        else:
            faulthandler.disable()
        sys.stderr.close()
        sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
