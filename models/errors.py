"""The error root, shared by the models and the application (which may both import it).

`AppError` carries an HTTP status and a stable code; `app/errors.py` adds the grouped subclasses
and the API maps every one to `{"error": {"code", "message", "details"}}`. The state machines of
`models/` raise `InvalidTransition` (the payments' `InvalidPaymentTransition`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class AppError(Exception):
    """Base of every expected failure (the root's own code is only ever seen for a bug: a 500)."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL_ERROR"
    default_message: ClassVar[str] = "Internal error."
    #: The unit of work commits (instead of rolling back) before this error reaches the caller.
    keeps_changes: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, details: Any = None) -> None:
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidTransition(AppError):
    """A state machine refused a move; `details` carries `from` and `to`."""

    status_code = 409
    code = "INVALID_TRANSITION"
    default_message = "This status change is not allowed."

    def __init__(self, from_status: str | None, to_status: str, message: str | None = None) -> None:
        super().__init__(
            message or f"Cannot move from {from_status} to {to_status}.",
            details={"from": from_status, "to": to_status},
        )


class InvalidPaymentTransition(InvalidTransition):
    """The payment state machine refused a status change (`models.payment_states`)."""

    def __init__(self, from_status: str | None, to_status: str) -> None:
        super().__init__(from_status, to_status, f"Cannot move a payment from {from_status} to {to_status}.")
