"""An emulator of the Gemini API's HTTP surface, as `google-genai` calls it.

- `POST /{v1,v1beta}/models/{model}:generateContent` with `x-goog-api-key` (the Gemini API);
- `POST /v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:predict` (Imagen)
  and `...:generateContent` with `Authorization: Bearer` (Vertex AI).

Answers have the real JSON shape (camelCase) with a real PNG; errors use Google's
`{"error": {"code", "message", "status", "details"}}`. Tests script the next answers with
`state.recorder.script(rate_limited(), ...)`.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.params import FromPath
from PIL import Image

from tests.emulators.recorder import Recorded, Recorder, Scripted

_GEMINI = re.compile(r"^(v1|v1beta)/models/([^/:]+):generateContent$")
_VERTEX = re.compile(
    r"^v1beta1/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+)"
    r":(generateContent|predict)$"
)
# The sizes gemini-2.5-flash-image returns, divided by 16 to keep the tests fast.
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


def blocked_prompt() -> Scripted:
    return Scripted(200, {"promptFeedback": {"blockReason": "SAFETY"}, **_usage(12)})


def image_safety() -> Scripted:
    candidate = {"content": {"role": "model", "parts": []}, "finishReason": "IMAGE_SAFETY"}
    return Scripted(200, {"candidates": [{**candidate, "index": 0}], **_usage(12)})


def text_only(text: str = "I can only describe the image in words.") -> Scripted:
    candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
    return Scripted(200, {"candidates": [{**candidate, "index": 0}], **_usage(12)})


def _usage(prompt_tokens: int, image_tokens: int = 0) -> dict[str, Any]:
    return {
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": image_tokens,
            "totalTokenCount": prompt_tokens + image_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        },
        "modelVersion": "gemini-2.5-flash-image",
        "responseId": uuid.uuid4().hex[:22],
    }


def _image_answer(body: dict[str, Any]) -> dict[str, Any]:
    ratio = body.get("generationConfig", {}).get("imageConfig", {}).get("aspectRatio", "1:1")
    width, height = SIZES.get(ratio, SIZES["1:1"])
    data = base64.b64encode(png(width // 16, height // 16)).decode()
    part = {"inlineData": {"mimeType": "image/png", "data": data}}
    candidate = {"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}
    return {"candidates": [candidate], **_usage(12, 1290)}


def _imagen_answer(body: dict[str, Any]) -> dict[str, Any]:
    ratio = body.get("parameters", {}).get("aspectRatio", "1:1")
    width, height = SIZES.get(ratio, SIZES["1:1"])
    data = base64.b64encode(png(width // 16, height // 16)).decode()
    return {"predictions": [{"mimeType": "image/png", "bytesBase64Encoded": data}]}


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
        model = gemini[2] if gemini is not None else vertex[3] if vertex is not None else ""
        if not (model.startswith("gemini-") or model.startswith("imagen-")):
            message = f"models/{model} is not found for API version v1beta."
            return _json(404, google_error(404, "NOT_FOUND", message))
        await asyncio.sleep(state.delay_s)
        scripted = state.recorder.next_scripted()
        if scripted is not None:
            return Response(
                scripted.body,
                status_code=scripted.status,
                headers=scripted.headers,
                media_type=scripted.content_type,
            )
        if vertex is not None and vertex[4] == "predict":
            return _json(200, _imagen_answer(body))
        return _json(200, _image_answer(body))

    return Litestar(route_handlers=[dispatch], openapi_config=None)
