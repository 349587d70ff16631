"""The one exception class of the package."""

from __future__ import annotations


class DistorchError(RuntimeError):
    """A call into the distorch-vision library failed.

    ``status`` is the library's status name (``"DV_ERR_NOT_FOUND"``, ``"DV_ERR_INVALID_ARGUMENT"``, …)
    and ``message`` its message, which names the bad value and the valid choices.
    """

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
        return (type(self), (self.status, self.message))


class LibraryNotFoundError(DistorchError):
    """``libdistorch_vision`` (or a symbol this package needs) is missing."""

    def __init__(self, message: str) -> None:
        super().__init__("DV_ERR_RUNTIME", message)

    def __reduce__(self):
        return (type(self), (self.message,))
