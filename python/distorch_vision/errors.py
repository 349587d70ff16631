"""The package's exceptions: :class:`DistorchError`, and one subclass per kind of failure that is
also the matching built-in, so ``except FileNotFoundError`` / ``ValueError`` / ``MemoryError``
/ ``OSError`` catch them too.

``DistorchError(status, message)`` gives the subclass of that status (``DV_ERR_NOT_FOUND`` →
:class:`NotFoundError`, ...), so every raise, in the library binding or in Python, is the right
kind.
"""

from __future__ import annotations


class DistorchError(RuntimeError):
    """A call into the distorch-vision library failed.

    ``status`` is the library's status name (``"DV_ERR_NOT_FOUND"``, ``"DV_ERR_INVALID_ARGUMENT"``, …)
    and ``message`` its message, which names the bad value and the valid choices.
    """

    def __new__(cls, *args, **kwargs):
        if cls is DistorchError and args:
            cls = _BY_STATUS.get(args[0], DistorchError)
        # The built-in base with the widest layout (OSError's over RuntimeError's) builds it.
        builtin = [b for b in cls.__mro__ if b.__module__ == "builtins" and b is not object]
        return max(builtin, key=lambda b: b.__basicsize__).__new__(cls)

    def __init__(self, status: str, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def kind(self) -> str:
        """The library's error kind, as the CLI's ``--json`` errors name it (``"not_found"``,
        ``"invalid_argument"``, …): the status name without ``DV_ERR_``, in lower case (the
        library names each kind's status so)."""
        return self.status.removeprefix("DV_ERR_").lower()

    def __reduce__(self):  # picklable across processes (Ray workers, multiprocessing)
        return (DistorchError, (self.status, self.message))


class InvalidArgumentError(DistorchError, ValueError):
    """A value is malformed or out of range (``DV_ERR_INVALID_ARGUMENT``)."""


class NotFoundError(DistorchError, FileNotFoundError):
    """A file, model, device or output name does not exist (``DV_ERR_NOT_FOUND``)."""


class DistorchIOError(DistorchError, OSError):
    """Reading or writing a file failed (``DV_ERR_IO``)."""


class InvalidModelError(DistorchError, ValueError):
    """The model file is broken or not a CLIP Vision model (``DV_ERR_INVALID_MODEL``)."""


class DoesNotFitError(DistorchError, MemoryError):
    """The plan does not fit the devices' memory (``DV_ERR_DOES_NOT_FIT``)."""


class SizeMismatchError(DistorchError, ValueError):
    """A buffer's element count does not match its shape (``DV_ERR_SIZE_MISMATCH``)."""


class InvalidHandleError(DistorchError, ValueError):
    """A model or outputs handle is unknown, freed or closed (``DV_ERR_INVALID_HANDLE``)."""


_BY_STATUS = {
    "DV_ERR_INVALID_ARGUMENT": InvalidArgumentError,
    "DV_ERR_NOT_FOUND": NotFoundError,
    "DV_ERR_IO": DistorchIOError,
    "DV_ERR_INVALID_MODEL": InvalidModelError,
    "DV_ERR_DOES_NOT_FIT": DoesNotFitError,
    "DV_ERR_SIZE_MISMATCH": SizeMismatchError,
    "DV_ERR_INVALID_HANDLE": InvalidHandleError,
}


class LibraryNotFoundError(DistorchError):
    """``libdistorch_vision`` (or a symbol this package needs) is missing."""

    def __init__(self, message: str) -> None:
        super().__init__("DV_ERR_RUNTIME", message)

    def __reduce__(self):
        return (type(self), (self.message,))
