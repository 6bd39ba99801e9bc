"""Exceptions raised inside the forwarder, one class per way a request can fail."""


class ForwarderError(Exception):
    """Base class for the forwarder's own errors."""


class ConfigError(ForwarderError):
    """An environment variable is missing or invalid."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class InvalidEnvelope(ForwarderError):
    """The request body is not a Pub/Sub push envelope."""


class InvalidEvent(ForwarderError):
    """An event can never be accepted by Mixpanel and goes to the dead-letter topic.

    `code` is one of the dead-letter error codes in `records.ErrorCode`.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


class MixpanelError(ForwarderError):
    """Mixpanel did not import a request, and the events are not at fault."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableError(MixpanelError):
    """A rate limit, server error, timeout or connection error worth retrying."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class AuthenticationError(MixpanelError):
    """Mixpanel rejected the credential (401 or 403): a configuration error."""


class UnexpectedResponse(MixpanelError):
    """Mixpanel responded with a status the forwarder has no rule for."""


class DeadlineExceeded(ForwarderError):
    """The retry deadline ran out before a call succeeded."""


class PublishError(ForwarderError):
    """Publishing to the dead-letter topic failed."""
