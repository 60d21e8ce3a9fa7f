"""equiv's own error types: every failure a user can cause is one of these.

Messages name the Python arguments that would fix them in backticks, as a caller writes them
(`batch=0`, `num_classes=10`, `force=True`); the command line shows those as its flags
(`equiv.cli.as_flags`: --batch 0, --num-classes 10, --force)."""

from __future__ import annotations

from collections.abc import Mapping


class EquivError(Exception):
    """Base class: a clear, one-line problem with the user's input or files (CLI exit 2)."""


class UnknownVariantError(EquivError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FrameworkError(EquivError):
    """A framework is unknown, not installed, or cannot run what was asked."""


class NonFiniteError(EquivError):
    """Weights or an input hold NaN or Inf: said as such, never passed on as a numerical difference."""


class UnsafeFileError(EquivError):
    """A file that only loads by running code from it (a pickle), refused without the opt-in."""


class ResourceError(EquivError):
    """A job that would need more memory than the machine has, refused before it starts."""


def _shape(s) -> str:
    return str(tuple(s))


class ParamMismatchError(EquivError):
    """Parameters do not fit a variant: lists what is missing, unexpected or of the wrong shape.

    `expected` (canonical name -> shape) and `found` (file name -> shape), when given, let the
    message say the shape of a missing or unexpected parameter too; `hint` is a last clause
    (the variant the file looks like, or the flag that would port it)."""

    def __init__(self, variant: str, missing=(), unexpected=(), mismatched=(), source: str | None = None, *,
                 expected: Mapping[str, tuple] | None = None, found: Mapping[str, tuple] | None = None,
                 hint: str | None = None):
        self.variant = variant
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)  # (name, expected shape, found shape)
        self.source = source
        self.expected = dict(expected or {})
        self.found = dict(found or {})
        self.hint = hint
        super().__init__(self._message())

    def relabel(self, source: str | None = None, hint: str | None = None) -> ParamMismatchError:
        """The same error about another source (a file rather than its temporary copy) or with a hint."""
        if source is not None:
            self.source = source
        if hint is not None:
            self.hint = hint
        self.args = (self._message(),)
        return self

    def _message(self) -> str:
        where = f"{self.source}: " if self.source else ""
        parts = []
        if self.mismatched:
            n, exp, got = self.mismatched[0]
            transposed = sorted(exp) == sorted(got) and tuple(exp) != tuple(got)
            why = ": the same axes in another order, a transposed kernel?" if transposed else ""
            parts.append(f"{len(self.mismatched)} of wrong shape (first: {n} expected {_shape(exp)}, found "
                         f"{_shape(got)}{why})")
        if self.missing:
            n = self.missing[0]
            shape = f" {_shape(self.expected[n])}" if n in self.expected else ""
            parts.append(f"{len(self.missing)} missing (first: {n}{shape})")
        if self.unexpected:
            n = self.unexpected[0]
            shape = f" {_shape(self.found[n])}" if n in self.found else ""
            parts.append(f"{len(self.unexpected)} unexpected (first: {n}{shape})")
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}parameters do not fit variant {self.variant}: " + "; ".join(parts) + hint
