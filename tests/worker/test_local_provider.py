from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.core.errors import ErrorCode, GenerationError
from worker.providers.base import build_request, parse_size
from worker.providers.local import LocalProvider, render


def request(prompt: str = "a lighthouse", **spec: object) -> bytes:
    return render(build_request(prompt, "pillow-v1", dict(spec), default_side=256, source=None))


def test_render_is_deterministic_for_a_prompt_and_seed() -> None:
    assert request(seed=1) == request(seed=1)
    assert request(seed=1) != request(seed=2)
    assert request("a lighthouse") != request("a fox")


def test_render_makes_a_png_of_the_requested_size() -> None:
    with Image.open(io.BytesIO(request(size="320x200"))) as image:
        assert image.format == "PNG"
        assert image.size == (320, 200)
    with Image.open(io.BytesIO(request(aspect_ratio="16:9"))) as image:
        assert image.size == (256, 144)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [({}, (512, 512)), ({"size": "1024x768"}, (1024, 768)), ({"aspect_ratio": "1:2"}, (256, 512))],
)
def test_parse_size(spec: dict[str, object], expected: tuple[int, int]) -> None:
    assert parse_size(spec, 512) == expected


@pytest.mark.parametrize("size", ["10x10", "9000x100"])
def test_sizes_out_of_range_are_refused(size: str) -> None:
    with pytest.raises(GenerationError) as caught:
        parse_size({"size": size}, 512)
    assert caught.value.code is ErrorCode.NO_RESULT


def test_image_to_image_blends_the_source() -> None:
    source = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 0, 255)).save(source, format="PNG")
    plain = render(build_request("p", "m", {"seed": 3}, default_side=128, source=None))
    blended = render(
        build_request("p", "m", {"seed": 3}, default_side=128, source=source.getvalue())
    )
    assert plain != blended
    with Image.open(io.BytesIO(blended)) as image:
        red, _green, blue = image.convert("RGB").getpixel((127, 127))  # type: ignore[misc]
        assert blue > red


async def test_local_provider_honours_its_delay() -> None:
    import time

    provider = LocalProvider(delay_ms=50)
    started = time.monotonic()
    result = await provider.generate(build_request("p", "m", {}, default_side=64, source=None))
    assert time.monotonic() - started >= 0.05
    assert result.content_type == "image/png"


async def test_local_provider_draws_while_its_delay_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The delay is the provider's time: the drawing happens inside it, not after it."""
    import asyncio
    import threading

    from worker.providers import local

    drawing = threading.Event()

    def draw(request: object) -> bytes:
        drawing.set()
        return b"png"

    monkeypatch.setattr(local, "render", draw)
    provider = LocalProvider(delay_ms=60_000)
    answer = asyncio.ensure_future(
        provider.generate(build_request("p", "m", {}, default_side=64, source=None))
    )
    assert await asyncio.to_thread(drawing.wait, 10), "nothing drawn during the delay"
    assert not answer.done(), "answered before its delay"
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer


async def test_prepare_mask_resizes_and_marks_painted_pixels_transparent() -> None:
    from worker.core.images import prepare_mask

    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (0, 0, 32, 64))  # the left half is painted: change it
    out = io.BytesIO()
    mask.save(out, format="PNG")
    prepared = await prepare_mask(out.getvalue(), (512, 256))
    with Image.open(io.BytesIO(prepared)) as image:
        assert image.size == (512, 256)
        alpha = image.getchannel("A")
        assert alpha.getpixel((10, 100)) == 0, "painted: transparent, to be repainted"
        assert alpha.getpixel((500, 100)) == 255, "unpainted: opaque, kept"


async def test_local_edit_changes_only_the_masked_area() -> None:
    from worker.core.images import prepare_mask

    source = io.BytesIO()
    Image.new("RGB", (128, 128), (0, 0, 255)).save(source, format="PNG")
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (64, 0, 128, 128))
    raw = io.BytesIO()
    mask.save(raw, format="PNG")
    request = build_request(
        "a red boat",
        "m",
        {"seed": 1},
        default_side=128,
        source=source.getvalue(),
        mask=await prepare_mask(raw.getvalue(), (128, 128)),
    )
    result = await LocalProvider(delay_ms=0).edit(request)
    with Image.open(io.BytesIO(result.data)) as image:
        rgb = image.convert("RGB")
        assert rgb.getpixel((10, 64)) == (0, 0, 255), "outside the mask the source is kept"
        assert rgb.getpixel((120, 120)) != (0, 0, 255), "inside the mask it is repainted"
