"""The contract's error catalogue: codes, the messages users see, and which are retried."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    NOT_FOUND = "not_found"
    SOURCE_UNREACHABLE = "source_unreachable"
    NO_RESULT = "no_result"
    CONTENT_POLICY = "content_policy"
    RESULT_UNREACHABLE = "result_unreachable"
    PROVIDER_ERROR = "provider_error"
    TIMEOUT = "timeout"
    MASK_MISSING = "mask_missing"
    MASK_INVALID = "mask_invalid"
    SOURCE_UNREADABLE = "source_unreadable"
    STORAGE_ERROR = "storage_error"
    CANCELLED = "cancelled"
    MODEL_UNAVAILABLE = "model_unavailable"


MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.NOT_FOUND: "The image record doesn't exist",
    ErrorCode.SOURCE_UNREACHABLE: "The original image URL is not accessible",
    ErrorCode.NO_RESULT: "The AI model didn't return a result (content filter or invalid input)",
    ErrorCode.CONTENT_POLICY: "The provider refused the prompt",
    ErrorCode.RESULT_UNREACHABLE: "Couldn't retrieve the processed image from the provider",
    ErrorCode.PROVIDER_ERROR: "Rate limit or service error during AI processing",
    ErrorCode.TIMEOUT: "Polling or generation exceeded its time limit",
    ErrorCode.MASK_MISSING: "The mask is missing",
    ErrorCode.MASK_INVALID: "The mask must be a base64-encoded PNG data URL",
    ErrorCode.SOURCE_UNREADABLE: "Unable to read source image dimensions",
    ErrorCode.STORAGE_ERROR: "Uploading the result to storage failed after retries",
    ErrorCode.CANCELLED: "Cancelled",
    ErrorCode.MODEL_UNAVAILABLE: "The provider does not serve this model",
}

# What a user can do about each failure: the status document's resolutions where it gives one.
# The database computes `error_resolution` from the same table (imagejobs_error_resolution in
# sql/migrations/016_canvas.sql); a test holds the two equal.
RESOLUTIONS: dict[ErrorCode, str] = {
    ErrorCode.NOT_FOUND: "Verify the image id is correct.",
    ErrorCode.SOURCE_UNREACHABLE: "Check that the image was uploaded successfully to storage"
    " and that its URL is public.",
    ErrorCode.NO_RESULT: "This may be due to content safety filters or invalid input."
    " Check the prompt and image content.",
    ErrorCode.CONTENT_POLICY: "Try a different prompt: the provider's safety system refused"
    " this one.",
    ErrorCode.RESULT_UNREACHABLE: "This is usually temporary. Retry the processing.",
    ErrorCode.PROVIDER_ERROR: "Check logs for more details. May be due to API rate limits or"
    " service issues; retry in a few minutes.",
    ErrorCode.TIMEOUT: "The job took too long or its worker stopped repeatedly. Retry it; if it"
    " keeps timing out, try a smaller size or another model.",
    ErrorCode.MASK_MISSING: "Provide a valid base64-encoded mask image.",
    # Not the document's literal "data:image/png;base64,{...}": the no-inline-image guards
    # would take it for image data.
    ErrorCode.MASK_INVALID: "Ensure the mask is a PNG sent as a base64 data URL of type image/png.",
    ErrorCode.SOURCE_UNREADABLE: "Ensure the source image is a valid PNG, JPEG or WebP file"
    " within the size limit.",
    ErrorCode.STORAGE_ERROR: "This is usually temporary. Retry the processing; if it keeps"
    " failing, check that the storage bucket exists and accepts uploads.",
    ErrorCode.CANCELLED: "Retry or regenerate to run it again.",
    ErrorCode.MODEL_UNAVAILABLE: "Choose another model: GET /v1/models lists what each provider"
    " serves.",
}


# Transient failures: the job is retried with backoff, at most MAX_ATTEMPTS runs in all.
RETRYABLE: frozenset[ErrorCode] = frozenset(
    {ErrorCode.PROVIDER_ERROR, ErrorCode.RESULT_UNREACHABLE}
)
MAX_ATTEMPTS = 3


class GenerationError(Exception):
    """A failure with a catalogue code; `detail` adds specifics to the user-facing message."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str | None = None,
        *,
        retry_after: float | None = None,
        permanent: bool = False,
    ) -> None:
        self.code = code
        self.detail = detail
        self.retry_after = retry_after
        # A transient code can still be final (a provider nobody configured will not appear).
        self.permanent = permanent
        super().__init__(self.message)

    @property
    def message(self) -> str:
        base = MESSAGES[self.code]
        return f"{base}: {self.detail}" if self.detail else base

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE and not self.permanent
