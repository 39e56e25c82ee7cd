from __future__ import annotations

import io

import pytest
from PIL import Image

from worker.errors import ErrorCode, GenerationError
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
