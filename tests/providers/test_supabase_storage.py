"""SupabaseStorage through the real storage3 client against the Storage API emulator."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from PIL import Image
from psycopg_pool import AsyncConnectionPool
from storage3 import AsyncStorageClient
from storage3.exceptions import StorageApiError

from tests.emulators.recorder import Scripted
from tests.emulators.server import serve
from tests.emulators.supabase_storage import StorageState
from tests.factories import insert_generation
from tests.worker.conftest import generation_row
from worker.core.config import load_settings
from worker.core.errors import ErrorCode, GenerationError
from worker.providers.local import LocalProvider
from worker.queue.pipeline import run_generation
from worker.queue.runtime import Runtime
from worker.storage.base import result_key
from worker.storage.supabase import SupabaseStorage

Factory = Callable[..., SupabaseStorage]


def png(color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="PNG")
    return out.getvalue()


def new_key() -> str:
    return result_key(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())


@pytest.fixture
async def make(supabase_storage: StorageState) -> AsyncIterator[Factory]:
    made: list[SupabaseStorage] = []

    def factory(**kwargs: Any) -> SupabaseStorage:
        options: dict[str, Any] = {
            "url": supabase_storage.url,
            "service_role_key": supabase_storage.key,
            "backoff_s": 0.01,
            **kwargs,
        }
        storage = SupabaseStorage(**options)
        made.append(storage)
        return storage

    yield factory
    for storage in made:
        await storage.aclose()


async def test_upload_lands_with_its_path_type_cache_control_and_upsert(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    key, data = new_key(), png()

    url = await make().put(key, data, "image/png")

    assert supabase_storage.objects == {f"images/{key}": (data, "image/png")}
    [upload] = supabase_storage.uploads()
    assert upload.method == "POST"
    assert upload.path == f"/storage/v1/object/images/{key}"
    assert upload.headers["x-upsert"] == "true"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert upload.headers["apikey"] == supabase_storage.key
    assert upload.headers["authorization"] == f"Bearer {supabase_storage.key}"
    assert upload.form["cacheControl"] == "31536000"
    assert upload.form["file"]["content_type"] == "image/png"
    assert url == f"{supabase_storage.url}/storage/v1/object/public/images/{key}"

    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "max-age=31536000"


async def test_a_second_upload_of_the_same_key_overwrites(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    storage, key = make(), new_key()
    first, second = png((255, 0, 0)), png((0, 0, 255))

    url_1 = await storage.put(key, first, "image/png")
    url_2 = await storage.put(key, second, "image/webp")

    assert url_1 == url_2
    assert supabase_storage.objects == {f"images/{key}": (second, "image/webp")}
    assert len(supabase_storage.uploads()) == 2
    async with httpx.AsyncClient() as client:
        assert (await client.get(url_2)).content == second


async def test_the_emulator_refuses_an_overwrite_without_upsert(
    supabase_storage: StorageState,
) -> None:
    """What upsert protects against: the real service's Duplicate error."""
    supabase_storage.add_bucket("images")
    headers = {"apikey": supabase_storage.key, "Authorization": f"Bearer {supabase_storage.key}"}
    client = AsyncStorageClient(f"{supabase_storage.url}/storage/v1/", headers=headers)
    async with client:
        bucket = client.from_("images")
        await bucket.upload("a/b.png", png(), {"content-type": "image/png"})
        with pytest.raises(StorageApiError) as caught:
            await bucket.upload("a/b.png", png(), {"content-type": "image/png"})
    assert str(caught.value.status) == "409"
    assert caught.value.code == "Duplicate"


async def test_signed_url_mode_returns_an_absolute_signed_url(
    supabase_storage: StorageState, make: Factory
) -> None:
    storage = make(bucket="private-images", signed_urls=True, signed_url_ttl_s=3600)
    await storage.ensure_bucket()
    assert supabase_storage.buckets["private-images"]["public"] is False
    key, data = new_key(), png()

    url = await storage.put(key, data, "image/png")

    assert url.startswith(
        f"{supabase_storage.url}/storage/v1/object/sign/private-images/{key}?token="
    )
    [sign] = [r for r in supabase_storage.recorder.requests if "/object/sign/" in r.path]
    assert sign.method == "POST" and sign.json == {"expiresIn": "3600"}
    async with httpx.AsyncClient() as client:
        signed = await client.get(url)
        public = await client.get(
            f"{supabase_storage.url}/storage/v1/object/public/private-images/{key}"
        )
    assert signed.status_code == 200 and signed.content == data
    assert signed.headers["content-type"] == "image/png"
    assert public.status_code == 400  # a private bucket serves no public URL


async def test_ensure_bucket_creates_a_missing_bucket_once(
    supabase_storage: StorageState, make: Factory
) -> None:
    storage = make()
    await storage.ensure_bucket()
    await storage.ensure_bucket()

    creates = [r for r in supabase_storage.recorder.requests if r.method == "POST"]
    assert [(r.path, r.json) for r in creates] == [
        ("/storage/v1/bucket", {"id": "images", "name": "images", "public": True})
    ]
    gets = [r.path for r in supabase_storage.recorder.requests if r.method == "GET"]
    assert gets == ["/storage/v1/bucket/images"] * 2
    assert supabase_storage.buckets["images"]["public"] is True


async def test_ensure_bucket_is_a_no_op_when_the_bucket_exists(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    await make().ensure_bucket()
    assert [(r.method, r.path) for r in supabase_storage.recorder.requests] == [
        ("GET", "/storage/v1/bucket/images")
    ]


async def test_ensure_bucket_tolerates_a_concurrent_create(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.recorder.script(
        Scripted(
            400, {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"}
        ),
        Scripted(
            400,
            {"statusCode": "409", "error": "Duplicate", "message": "The resource already exists"},
        ),
    )
    await make().ensure_bucket()


async def test_three_server_errors_give_three_attempts_then_storage_error(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    error = {"statusCode": "500", "error": "internal", "message": "Internal Server Error"}
    supabase_storage.recorder.script(*[Scripted(500, error)] * 3)

    with pytest.raises(GenerationError) as caught:
        await make().put(new_key(), png(), "image/png")

    assert caught.value.code == ErrorCode.STORAGE_ERROR
    assert caught.value.code.value == "storage_error"
    assert len(supabase_storage.uploads()) == 3
    assert supabase_storage.objects == {}


async def test_two_failures_then_success_succeeds_on_the_third_attempt(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    supabase_storage.recorder.script(
        Scripted(500, {"statusCode": "500", "error": "internal", "message": "boom"}),
        Scripted(503, "<html>upstream unavailable</html>", content_type="text/html"),
    )
    key, data = new_key(), png()

    url = await make().put(key, data, "image/png")

    assert len(supabase_storage.uploads()) == 3
    assert url.endswith(f"/object/public/images/{key}")
    assert supabase_storage.objects[f"images/{key}"] == (data, "image/png")


async def test_a_wrong_service_key_is_a_storage_error_that_does_not_show_the_key(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    wrong = "sb_secret_wrong-key-0123456789"
    storage = make(service_role_key=wrong)

    with pytest.raises(GenerationError) as caught:
        await storage.put(new_key(), png(), "image/png")

    assert caught.value.code == ErrorCode.STORAGE_ERROR
    assert "401" in str(caught.value)
    assert wrong not in str(caught.value) and supabase_storage.key not in str(caught.value)
    assert wrong not in repr(storage)
    assert len(supabase_storage.uploads()) == 1  # a refusal is not retried
    assert supabase_storage.objects == {}


async def test_a_refused_jwt_is_not_retried(supabase_storage: StorageState, make: Factory) -> None:
    supabase_storage.add_bucket("images")
    refusal = {"statusCode": "403", "error": "Unauthorized", "message": "invalid signature"}
    supabase_storage.recorder.script(Scripted(400, refusal))

    with pytest.raises(GenerationError) as caught:
        await make().put(new_key(), png(), "image/png")

    assert caught.value.code == ErrorCode.STORAGE_ERROR
    assert "invalid signature" in str(caught.value)
    assert len(supabase_storage.uploads()) == 1


async def test_an_unreachable_service_is_retried_then_a_storage_error() -> None:
    with serve(lambda *_: None) as url:  # a port that stops listening
        pass
    storage = SupabaseStorage(url, "sb_secret_x", attempts=2, backoff_s=0.0)
    try:
        with pytest.raises(GenerationError) as caught:
            await storage.put(new_key(), png(), "image/png")
    finally:
        await storage.aclose()
    assert caught.value.code == ErrorCode.STORAGE_ERROR
    assert "ConnectError" in str(caught.value)


async def test_ensure_bucket_with_a_wrong_key_fails_without_showing_it(
    supabase_storage: StorageState, make: Factory
) -> None:
    wrong = "sb_secret_wrong-key-0123456789"
    with pytest.raises(RuntimeError) as caught:
        await make(service_role_key=wrong).ensure_bucket()
    assert "Invalid API key" in str(caught.value) and wrong not in str(caught.value)
    assert supabase_storage.buckets == {}


async def test_a_generation_stores_its_result_and_thumbnail_in_the_bucket(
    supabase_storage: StorageState, make: Factory, pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    supabase_storage.add_bucket("images")
    settings = load_settings({"LOCAL_PROVIDER_DELAY_MS": "0"})
    runtime = Runtime(settings, pool, {"local": LocalProvider(delay_ms=0)}, make())
    generation_id = await insert_generation(
        pool, project_id, prompt_spec='{"size": "1024x512", "seed": 1}'
    )

    await run_generation(runtime, generation_id, attempt=1)

    row = await generation_row(pool, generation_id)
    assert row["status"] == "completed"
    key = f"{row['workspace_id']}/{project_id}/{generation_id}"
    public = f"{supabase_storage.url}/storage/v1/object/public/images"
    assert (row["result_image_url"], row["thumbnail_url"]) == (
        f"{public}/{key}.png",
        f"{public}/{key}-thumb.webp",
    )
    data, content_type = supabase_storage.objects[f"images/{key}-thumb.webp"]
    assert content_type == "image/webp"
    async with httpx.AsyncClient() as client:
        served = await client.get(str(row["thumbnail_url"]))
    assert served.status_code == 200 and served.content == data
    with Image.open(io.BytesIO(served.content)) as image:
        assert (image.format, image.size) == ("WEBP", (256, 128))
    assert (row["result_key"], row["thumbnail_key"]) == (f"{key}.png", f"{key}-thumb.webp")


async def test_delete_removes_the_files_and_a_repeat_is_no_error(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    storage = make()
    kept, gone, thumb = new_key(), new_key(), new_key()
    for key in (kept, gone, thumb):
        await storage.put(key, png(), "image/png")

    await storage.delete([gone, thumb])
    await storage.delete([gone, thumb])  # already gone: a repeated delete succeeds

    assert set(supabase_storage.objects) == {f"images/{kept}"}
    removes = [r for r in supabase_storage.recorder.requests if r.method == "DELETE"]
    assert [r.path for r in removes] == ["/storage/v1/object/images"] * 2
    assert removes[0].json == {"prefixes": [gone, thumb]}


async def test_a_failing_delete_is_retried_then_an_os_error_and_the_file_stays(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    storage = make()
    key = new_key()
    await storage.put(key, png(), "image/png")
    error = {"statusCode": "500", "error": "internal", "message": "Internal Server Error"}
    supabase_storage.recorder.script(*[Scripted(500, error)] * 3)

    with pytest.raises(OSError, match="500"):
        await storage.delete([key])

    assert f"images/{key}" in supabase_storage.objects
    await storage.delete([key])
    assert supabase_storage.objects == {}


async def test_urls_of_a_public_bucket_are_its_public_urls(
    supabase_storage: StorageState, make: Factory
) -> None:
    supabase_storage.add_bucket("images")
    storage = make()
    key = new_key()
    stored = await storage.put(key, png(), "image/png")

    assert await storage.urls([key]) == {key: stored}
    assert storage.signs_urls is False


async def test_urls_of_a_private_bucket_are_freshly_signed_in_one_call_and_cached(
    supabase_storage: StorageState, make: Factory
) -> None:
    storage = make(bucket="private-images", signed_urls=True, signed_url_ttl_s=3600)
    await storage.ensure_bucket()
    first, second = new_key(), new_key()
    for key in (first, second):
        await storage.put(key, png(), "image/png")
    supabase_storage.tokens.clear()  # the URLs written at upload time are dead now
    storage._signed.clear()
    supabase_storage.recorder.reset()

    urls = await storage.urls([first, second, "nowhere/x.png"])
    again = await storage.urls([first, second])

    assert set(urls) == {first, second}  # a missing object gets no URL
    assert again == {first: urls[first], second: urls[second]}
    signs = [r for r in supabase_storage.recorder.requests if r.method == "POST"]
    assert len(signs) == 1 and signs[0].path == "/storage/v1/object/sign/private-images"
    assert signs[0].json == {"paths": [first, second, "nowhere/x.png"], "expiresIn": "3600"}
    async with httpx.AsyncClient() as client:
        for key, url in urls.items():
            served = await client.get(url)
            assert served.status_code == 200, key


async def test_urls_when_signing_fails_leave_the_keys_out_instead_of_raising(
    supabase_storage: StorageState, make: Factory
) -> None:
    storage = make(bucket="private-images", signed_urls=True, signed_url_ttl_s=3600)
    await storage.ensure_bucket()
    key = new_key()
    await storage.put(key, png(), "image/png")
    storage._signed.clear()
    error = {"statusCode": "500", "error": "internal", "message": "Internal Server Error"}
    supabase_storage.recorder.script(*[Scripted(500, error)] * 3)

    assert await storage.urls([key]) == {}
