"""`POST /api/v1/webhooks/twilio/status` (public, signed; also at the root): Twilio's status callbacks.

The unit of work (`uow`) comes from the router it is mounted on (`app/api/app.py`).
"""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.status_codes import HTTP_204_NO_CONTENT

from app.adapters.twilio_sender import CALLBACK_REF, signature_valid
from app.api.dependencies import UnitOfWorkDep, web_context
from app.errors import TwilioSignatureInvalid
from app.logging import get_logger
from app.services import notification_delivery

log = get_logger("webhooks")


class TwilioStatusController(Controller):
    path = "/webhooks/twilio/status"
    tags = ["webhooks"]

    @post("/", status_code=HTTP_204_NO_CONTENT)
    async def receive(self, request: Request[object, object, State], uow: UnitOfWorkDep,
                      state: State) -> None:
        """A form-encoded status callback signed with `X-Twilio-Signature` over the configured
        `TWILIO_STATUS_CALLBACK_URL`: 204 whether or not it changed a notification (an unknown
        message or an older status changes nothing); a missing or wrong signature is 403
        `INVALID_SIGNATURE`, and so is every callback on a farm without Twilio configured."""
        form = await request.form()
        params = {key: str(value) for key, value in form.items()}
        reference = request.query_params.get(CALLBACK_REF)
        signature = request.headers.get("x-twilio-signature")
        if not signature_valid(web_context(state).settings.twilio, params, signature, reference):
            log.warning("webhooks.twilio_bad_signature", signed=signature is not None,
                        sid=params.get("MessageSid"))
            raise TwilioSignatureInvalid("The X-Twilio-Signature is missing or does not verify.")
        await notification_delivery.record_status(
            uow.session, message_sid=params.get("MessageSid", ""),
            twilio_status=params.get("MessageStatus", ""), error_code=params.get("ErrorCode"),
            notification_ref=reference,
        )
