"""An emulator of the Gemini API's HTTP surface as it answers today (read 2026-12-02,
docs/providers.md), as `google-genai` calls it.

- `POST /{v1,v1beta}/models/{model}:generateContent` with `x-goog-api-key` (the Gemini API);
- `POST /v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`
  with `Authorization: Bearer` (Vertex AI).

Only the image models served today answer; a shut-down model (`SHUT_DOWN`: gemini-2.5-flash-image,
the `-preview` ids, every Imagen model) or an unknown one is a 404 `NOT_FOUND`. `imageConfig` is
validated per model (`aspectRatio`, `imageSize` 1K/2K/4K with an uppercase K). Answers have the
real JSON shape (camelCase) with a real PNG; errors use Google's
`{"error": {"code", "message", "status", "details"}}`. Refusals come as HTTP 200 without an
image; tests script them (and other answers) with `state.recorder.script(finish("IMAGE_SAFETY"))`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.params import FromPath
from PIL import Image

from tests.emulators.recorder import Recorded, Recorder, Scripted

_GEMINI = re.compile(r"^(v1|v1beta)/models/([^/:]+):([A-Za-z]+)$")
_VERTEX = re.compile(
    r"^v1beta1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+):([A-Za-z]+)$"
)
RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
EXTRA_RATIOS = ("1:4", "4:1", "1:8", "8:1")
TIERS = ("1K", "2K", "4K")
# Image models served on 2026-12-02: aspect ratios and image sizes each takes (Google's
# changelog and SDK; 512 and the lite model's 1K limit are third-party).
SERVED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "gemini-nano-banana-2.1": (RATIOS + EXTRA_RATIOS, TIERS),
    "gemini-3-pro-image": (RATIOS, TIERS),
    "gemini-3.1-flash-image": (RATIOS, ("512", *TIERS)),  # deprecated, still served
    "gemini-3.1-flash-lite-image": (RATIOS, ("1K",)),
}
# Shut down, with the date (Google's deprecations page and changelog).
SHUT_DOWN = {
    "gemini-2.5-flash-image": "2026-10-02",
    "gemini-2.5-flash-image-preview": "2026-10-02",
    "gemini-3-pro-image-preview": "2026-06-25",
    "gemini-3.1-flash-image-preview": "2026-06-25",
    "imagen-4.0-generate-001": "2026-08-17",
    "imagen-4.0-ultra-generate-001": "2026-08-17",
    "imagen-4.0-fast-generate-001": "2026-08-17",
    "imagen-3.0-generate-002": "2026-08-17",
    "imagen-3.0-capability-001": "2026-08-17",
}
# The 1K sizes of the ratios Gemini image models return, divided by 16 to keep the tests fast
# (2K doubles each side, 4K quadruples it).
SIZES = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
SCALE = {"512": 0.5, "1K": 1, "2K": 2, "4K": 4}


@dataclass
class GoogleState:
    key: str = "google-test-key"
    token: str = "vertex-test-token"
    recorder: Recorder = field(default_factory=Recorder)
    base_url: str = ""
    delay_s: float = 0.0  # how long each answer takes (timeouts)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (40, 120, 200)).save(out, format="PNG")
    return out.getvalue()


def google_error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def rate_limited(delay: str = "7s") -> Scripted:
    return Scripted(
        429,
        google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generativelanguage.googleapis.com/requests"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay},
            ],
        ),
    )


def server_error() -> Scripted:
    return Scripted(500, google_error(500, "INTERNAL", "An internal error has occurred."))


def blocked_prompt(reason: str = "SAFETY") -> Scripted:
    """A prompt-level block: `promptFeedback.blockReason` and no candidates."""
    return Scripted(200, {"promptFeedback": {"blockReason": reason}, **_usage(12)})


def finish(reason: str) -> Scripted:
    """A candidate without an image part, ending with `finishReason` (IMAGE_SAFETY, ...)."""
    candidate = {"content": {"role": "model", "parts": []}, "finishReason": reason, "index": 0}
    return Scripted(200, {"candidates": [candidate], **_usage(12)})


def text_only(text: str = "I can only describe the image in words.") -> Scripted:
    candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
    return Scripted(200, {"candidates": [{**candidate, "index": 0}], **_usage(12)})


def not_found(model: str) -> dict[str, Any]:
    message = (
        f"models/{model} is not found for API version v1beta, or is not supported for "
        "generateContent. Call ListModels to see the list of available models and their "
        "supported methods."
    )
    return google_error(404, "NOT_FOUND", message)


def _usage(prompt_tokens: int, image_tokens: int = 0, model: str = "") -> dict[str, Any]:
    return {
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": image_tokens,
            "totalTokenCount": prompt_tokens + image_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        },
        "modelVersion": model or "gemini-nano-banana-2.1",
        "responseId": uuid.uuid4().hex[:22],
    }


def _invalid(message: str) -> Response[Any]:
    return _json(400, google_error(400, "INVALID_ARGUMENT", message))


def _dimensions(ratio: str, tier: str) -> tuple[int, int]:
    if ratio in SIZES:
        width, height = SIZES[ratio]
    else:  # the extreme ratios: about a megapixel at 1K
        w, h = (int(v) for v in ratio.split(":"))
        width = round(math.sqrt(1024 * 1024 * w / h) / 16) * 16
        height = round(width * h / w / 16) * 16
    scale = SCALE[tier]
    return round(width * scale), round(height * scale)


def _image_answer(model: str, body: dict[str, Any]) -> Response[Any]:
    """The answer to a valid request, or the 400 the API gives for an invalid image config."""
    ratios, tiers = SERVED[model]
    config = body.get("generationConfig") or {}
    image_config = config.get("imageConfig") or {}
    ratio = str(image_config.get("aspectRatio", "1:1"))
    tier = str(image_config.get("imageSize", "1K"))
    if ratio not in ratios:
        return _invalid(
            f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: "
            f"unsupported aspect ratio {ratio!r} for {model}"
        )
    if tier not in tiers:
        return _invalid(
            f"* GenerateContentRequest.generation_config.image_config.image_size: "
            f"unsupported image size {tier!r} for {model} (use {', '.join(tiers)})"
        )
    if "IMAGE" not in (config.get("responseModalities") or ["TEXT", "IMAGE"]):
        return _json(200, text_only().body)
    width, height = _dimensions(ratio, tier)
    data = base64.b64encode(png(width // 16, height // 16)).decode()
    part = {"inlineData": {"mimeType": "image/png", "data": data}}
    candidate = {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
    return _json(200, {"candidates": [candidate], **_usage(12, 1290, model)})


def _json(
    status: int, body: bytes | str | dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(body, status_code=status, headers=headers or {}, media_type="application/json")


def build_google_emulator(state: GoogleState) -> Litestar:
    @route("/{rest:path}", http_method=["POST"])
    async def dispatch(request: Request[Any, Any, Any], rest: FromPath[str]) -> Response[Any]:
        path = rest.strip("/")
        body = await request.json()
        state.recorder.requests.append(
            Recorded(
                method=request.method,
                path=request.url.path,
                headers=dict(request.headers),
                query=dict(request.query_params),
                json=body,
            )
        )
        gemini, vertex = _GEMINI.match(path), _VERTEX.match(path)
        if gemini is None and vertex is None:
            message = f"The requested URL /{path} was not found on this server."
            return _json(404, google_error(404, "NOT_FOUND", message))
        if gemini is not None:
            key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
            if not key:
                message = (
                    "Method doesn't allow unregistered callers (callers without established "
                    "identity). Please use API Key or other form of API consumer identity to call "
                    "this API."
                )
                return _json(403, google_error(403, "PERMISSION_DENIED", message))
            if key != state.key:
                reason = {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                }
                message = "API key not valid. Please pass a valid API key."
                return _json(400, google_error(400, "INVALID_ARGUMENT", message, [reason]))
        elif request.headers.get("authorization") != f"Bearer {state.token}":
            message = "Request had invalid authentication credentials."
            return _json(401, google_error(401, "UNAUTHENTICATED", message))
        found = gemini or vertex
        assert found is not None
        model, method = found[found.re.groups - 1], found[found.re.groups]
        if model not in SERVED or method != "generateContent":
            return _json(404, not_found(model))
        await asyncio.sleep(state.delay_s)
        scripted = state.recorder.next_scripted()
        if scripted is not None:
            return Response(
                scripted.body,
                status_code=scripted.status,
                headers=scripted.headers,
                media_type=scripted.content_type,
            )
        return _image_answer(model, body)

    return Litestar(route_handlers=[dispatch], openapi_config=None)
