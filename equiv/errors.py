"""equiv's own error types: every failure a user can cause is one of these."""

from __future__ import annotations


class EquivError(Exception):
    """Base class: a clear, one-line problem with the user's input or files (CLI exit 2)."""


class UnknownVariantError(EquivError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class FrameworkError(EquivError):
    """A framework is unknown, not installed, or cannot run what was asked."""


class ParamMismatchError(EquivError):
    """Parameters do not fit a variant: lists what is missing, unexpected or of the wrong shape."""

    def __init__(self, variant: str, missing=(), unexpected=(), mismatched=(), source: str | None = None):
        self.variant = variant
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)  # (name, expected shape, found shape)
        self.source = source
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"{self.source}: " if self.source else ""
        parts = []
        if self.mismatched:
            n, exp, got = self.mismatched[0]
            parts.append(
                f"{len(self.mismatched)} of wrong shape (first: {n} expected {tuple(exp)}, found {tuple(got)})"
            )
        if self.missing:
            parts.append(f"{len(self.missing)} missing (first: {self.missing[0]})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected (first: {self.unexpected[0]})")
        return f"{where}parameters do not fit variant {self.variant}: " + "; ".join(parts)
