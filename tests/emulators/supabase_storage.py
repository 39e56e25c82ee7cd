"""An emulator of Supabase Storage's HTTP API (https://supabase.github.io/storage/), the routes
storage3 uses for buckets, uploads, signed and public URLs.

Errors come as the real service renders them: HTTP 400 with the meaningful status in the body's
`statusCode` (`{"statusCode": "404", "error": "Bucket not found", "message": ...}`); the API
gateway in front answers 401 `{"message": "Invalid API key"}` when `apikey` is wrong.
Scripted answers (`recorder.script(...)`) replace the next authenticated API calls (not the
public or signed GETs), e.g. three 500s for the next three uploads.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, Request, Response, route
from litestar.datastructures import UploadFile
from litestar.params import FromPath

from tests.emulators.recorder import Recorded, Recorder

_OBJECT = re.compile(r"^object/(?:(sign|public)/)?([^/]+)/(.+)$")
_OBJECTS = re.compile(r"^object/(?:(sign)/)?([^/]+)$")  # a bucket's objects: remove, sign many
_BUCKET = re.compile(r"^bucket(?:/([^/]+))?$")


@dataclass
class StoredObject:
    data: bytes
    content_type: str
    cache_control: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class StorageState:
    key: str = field(default_factory=lambda: f"sb_secret_{secrets.token_urlsafe(18)}")
    url: str = ""  # like https://<ref>.supabase.co: without /storage/v1
    recorder: Recorder = field(default_factory=Recorder)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    stored: dict[str, StoredObject] = field(default_factory=dict)  # "bucket/path" → object
    tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token → path, expiry

    @property
    def objects(self) -> dict[str, tuple[bytes, str]]:
        """ "bucket/path" → (bytes, content type)."""
        return {path: (obj.data, obj.content_type) for path, obj in self.stored.items()}

    def add_bucket(self, name: str, *, public: bool = True) -> None:
        now = datetime.now(UTC).isoformat()
        self.buckets[name] = {
            "id": name,
            "name": name,
            "owner": "",
            "owner_id": None,
            "public": public,
            "type": "STANDARD",
            "file_size_limit": None,
            "allowed_mime_types": None,
            "created_at": now,
            "updated_at": now,
        }

    def uploads(self) -> list[Recorded]:
        return [r for r in self.recorder.requests if _is_upload(r.method, r.path)]

    def reset(self) -> None:
        self.recorder.reset()
        self.buckets.clear()
        self.stored.clear()
        self.tokens.clear()


def _is_upload(method: str, path: str) -> bool:
    rest = path.removeprefix("/storage/v1/")
    match = _OBJECT.match(rest)
    return (
        method in ("POST", "PUT")
        and match is not None
        and match.group(1) is None
        and _OBJECTS.match(rest) is None
    )


def _error(status: str, error: str, message: str, http_status: int = 400) -> Response[Any]:
    body = {"statusCode": status, "error": error, "message": message}
    return Response(body, status_code=http_status, media_type="application/json")


def _bucket_missing() -> Response[Any]:
    return _error("404", "Bucket not found", "Bucket not found")


def _object_missing() -> Response[Any]:
    return _error("404", "not_found", "Object not found")


def _duplicate() -> Response[Any]:
    return _error("409", "Duplicate", "The resource already exists")


def _serve(obj: StoredObject) -> Response[bytes]:
    return Response(
        obj.data,
        status_code=200,
        media_type=obj.content_type,
        headers={"cache-control": f"max-age={obj.cache_control}", "etag": f'"{obj.id}"'},
    )


def build_supabase_storage_emulator(state: StorageState) -> Litestar:
    def auth_error(request: Request[Any, Any, Any]) -> Response[Any] | None:
        apikey = request.headers.get("apikey")
        if apikey is None:
            hint = "Only the anon or service_role API key should be passed in the apikey header"
            return Response(
                {"message": "No API key found in request", "hint": hint}, status_code=401
            )
        if apikey != state.key:
            hint = "Double check your Supabase `anon` or `service_role` API key."
            return Response({"message": "Invalid API key", "hint": hint}, status_code=401)
        if request.headers.get("authorization") != f"Bearer {state.key}":
            return _error("403", "Unauthorized", "invalid signature")
        return None

    async def upload(
        request: Request[Any, Any, Any], record: Recorded, bucket: str, path: str
    ) -> Response[Any]:
        if bucket not in state.buckets:
            return _bucket_missing()
        content_type = request.headers.get("content-type", "")
        cache_control = request.headers.get("cache-control", "no-cache")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            part = form.get("file")
            if not isinstance(part, UploadFile):
                return _error("400", "InvalidRequest", "No file part in the multipart body")
            data = await part.read()
            content_type = part.content_type or "application/octet-stream"
            cache_control = str(form.get("cacheControl") or cache_control)
            record.form = {
                "cacheControl": form.get("cacheControl"),
                "file": {"filename": part.filename, "content_type": part.content_type},
            }
        else:
            data = record.body
        key = f"{bucket}/{path}"
        upsert = request.headers.get("x-upsert", "false").lower() == "true"
        exists = key in state.stored
        if request.method == "POST" and exists and not upsert:
            return _duplicate()
        if request.method == "PUT" and not exists:
            return _object_missing()
        obj = StoredObject(data, content_type, cache_control)
        if exists:
            obj.id = state.stored[key].id
        state.stored[key] = obj
        return Response({"Key": key, "Id": obj.id}, status_code=200)

    def sign(record: Recorded, bucket: str, path: str) -> Response[Any]:
        if bucket not in state.buckets:
            return _bucket_missing()
        key = f"{bucket}/{path}"
        if key not in state.stored:
            return _object_missing()
        try:
            expires_in = int(str((record.json or {}).get("expiresIn")))
        except ValueError:
            return _error("400", "InvalidRequest", "body/expiresIn must be integer")
        if expires_in < 1:
            return _error("400", "InvalidRequest", "body/expiresIn must be >= 1")
        token = secrets.token_urlsafe(24)
        state.tokens[token] = (key, time.time() + expires_in)
        return Response({"signedURL": f"/object/sign/{key}?token={token}"}, status_code=200)

    def sign_many(record: Recorded, bucket: str) -> Response[Any]:
        if bucket not in state.buckets:
            return _bucket_missing()
        body = record.json if isinstance(record.json, dict) else {}
        paths = body.get("paths")
        try:
            expires_in = int(str(body.get("expiresIn")))
        except ValueError:
            return _error("400", "InvalidRequest", "body/expiresIn must be integer")
        if not isinstance(paths, list) or expires_in < 1:
            return _error("400", "InvalidRequest", "body must have paths and expiresIn >= 1")
        answers = []
        for path in paths:
            key = f"{bucket}/{path}"
            if key not in state.stored:
                answers.append(
                    {
                        "error": "Either the object does not exist or you do not have access to it",
                        "path": path,
                        "signedURL": None,
                    }
                )
                continue
            token = secrets.token_urlsafe(24)
            state.tokens[token] = (key, time.time() + expires_in)
            answers.append(
                {"error": None, "path": path, "signedURL": f"/object/sign/{key}?token={token}"}
            )
        return Response(answers, status_code=200)

    def remove(record: Recorded, bucket: str) -> Response[Any]:
        """Storage answers 200 with the objects it removed; prefixes that match nothing are no error."""
        if bucket not in state.buckets:
            return _bucket_missing()
        body = record.json if isinstance(record.json, dict) else {}
        prefixes = body.get("prefixes")
        if not isinstance(prefixes, list) or not prefixes:
            return _error("400", "InvalidRequest", "body must have required property 'prefixes'")
        removed = []
        for path in prefixes:
            obj = state.stored.pop(f"{bucket}/{path}", None)
            if obj is not None:
                removed.append({"name": path, "bucket_id": bucket, "id": obj.id})
        return Response(removed, status_code=200)

    def get_signed(request: Request[Any, Any, Any], bucket: str, path: str) -> Response[Any]:
        key = f"{bucket}/{path}"
        granted = state.tokens.get(request.query_params.get("token", ""))
        if granted is None or granted[0] != key:
            return _error("400", "InvalidJWT", "invalid signature")
        if granted[1] < time.time():
            return _error("400", "InvalidJWT", "jwt expired")
        obj = state.stored.get(key)
        return _serve(obj) if obj else _object_missing()

    def get_public(bucket: str, path: str) -> Response[Any]:
        info = state.buckets.get(bucket)
        if info is None:
            return _bucket_missing()
        obj = state.stored.get(f"{bucket}/{path}")
        if obj is None or not info["public"]:
            return _object_missing()
        return _serve(obj)

    def buckets(
        request: Request[Any, Any, Any], record: Recorded, name: str | None
    ) -> Response[Any]:
        if request.method == "GET" and name is not None:
            info = state.buckets.get(name)
            return Response(info, status_code=200) if info else _bucket_missing()
        if request.method == "GET":
            return Response(list(state.buckets.values()), status_code=200)
        if request.method == "POST" and name is None:
            body = record.json if isinstance(record.json, dict) else {}
            bucket_id = str(body.get("id") or body.get("name") or "")
            if not bucket_id:
                return _error("400", "InvalidRequest", "body must have required property 'name'")
            if bucket_id in state.buckets:
                return _duplicate()
            state.add_bucket(bucket_id, public=bool(body.get("public", False)))
            return Response({"name": bucket_id}, status_code=200)
        return _error("404", "not_found", "Route not found", http_status=404)

    @route("/storage/v1/{rest:path}", http_method=["GET", "POST", "PUT", "DELETE"])
    async def dispatch(request: Request[Any, Any, Any], rest: FromPath[str]) -> Response[Any]:
        body = await request.body()
        record = Recorded(
            method=request.method,
            path=request.url.path,
            headers=dict(request.headers),
            query=dict(request.query_params),
            body=body,
        )
        if request.headers.get("content-type", "").startswith("application/json") and body:
            record.json = await request.json()
        state.recorder.requests.append(record)
        rest = rest.strip("/")
        match = _OBJECT.match(rest)
        if request.method == "GET" and match and match.group(1) == "public":
            return get_public(match.group(2), match.group(3))
        if request.method == "GET" and match and match.group(1) == "sign":
            return get_signed(request, match.group(2), match.group(3))

        denied = auth_error(request)
        if denied is not None:
            return denied
        scripted = state.recorder.next_scripted()
        if scripted is not None:
            return Response(
                scripted.body,
                status_code=scripted.status,
                headers=scripted.headers,
                media_type=scripted.content_type,
            )
        many = _OBJECTS.match(rest)
        if many and many.group(1) == "sign" and request.method == "POST":
            return sign_many(record, many.group(2))
        if many and many.group(1) is None and request.method == "DELETE":
            return remove(record, many.group(2))
        if match and match.group(1) is None and request.method in ("POST", "PUT"):
            return await upload(request, record, match.group(2), match.group(3))
        if match and match.group(1) == "sign" and request.method == "POST":
            return sign(record, match.group(2), match.group(3))
        if bucket_match := _BUCKET.match(rest):
            return buckets(request, record, bucket_match.group(1))
        return _error("404", "not_found", "Route not found", http_status=404)

    return Litestar(route_handlers=[dispatch], openapi_config=None)
