"""The offline `local` provider: renders a real PNG with Pillow, deterministic per prompt and seed.

It needs no key and no network, so `scripts/dev` and the tests run the whole lifecycle with it.
`LOCAL_PROVIDER_DELAY_MS` stands in for the seconds a real model takes.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import random
import textwrap
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import msgspec
from PIL import Image, ImageDraw, ImageFont

from worker.providers.base import ImageRequest, ImageResult


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at `size`, loaded once per size (loading it parses the font)."""
    return ImageFont.load_default(size=size)


def _palette(rng: random.Random) -> list[tuple[int, int, int]]:
    return [(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(6)]


def render(request: ImageRequest) -> bytes:
    digest = hashlib.sha256(f"{request.prompt}\x00{request.seed}".encode()).digest()
    rng = random.Random(digest)
    width, height = request.width, request.height
    top, bottom, *accents = _palette(rng)

    image = Image.linear_gradient("L").resize((width, height))
    image = Image.composite(
        Image.new("RGB", (width, height), bottom), Image.new("RGB", (width, height), top), image
    )
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(12):
        color = (*rng.choice(accents), rng.randrange(60, 180))
        x, y = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(width, height) // 20, max(width, height) // 4)
        if rng.random() < 0.5:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color)
        else:
            draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=color)

    if request.source is not None:
        with Image.open(io.BytesIO(request.source)) as source:
            base = source.convert("RGB").resize((width, height))
        image = Image.blend(base, image, 0.35)
        draw = ImageDraw.Draw(image, "RGBA")

    size = max(12, width // 32)
    font = _font(size)
    # As much of the prompt as the image can show (glyphs are about 0.6 em wide, lines 1.2 em):
    # drawing text that falls outside a small image only costs time.
    columns = max(1, min(40, int(width / (size * 0.6))))
    rows = max(1, min(4, int(height / (size * 1.2))))
    caption = "\n".join(textwrap.wrap(request.prompt, width=columns)[:rows])
    draw.multiline_text(
        (width // 24 + 1, height // 24 + 1), caption, font=font, fill=(0, 0, 0, 160)
    )
    draw.multiline_text((width // 24, height // 24), caption, font=font, fill=(255, 255, 255, 230))

    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=1)
    return out.getvalue()


def inpaint(request: ImageRequest) -> bytes:
    """Repaints the source where the mask is transparent (alpha 0), keeps it where opaque."""
    if request.source is None or request.mask is None:
        raise ValueError("an edit needs a source image and a mask")
    with Image.open(io.BytesIO(request.source)) as source_image:
        source = source_image.convert("RGB")
    with Image.open(io.BytesIO(request.mask)) as mask_image:
        keep = mask_image.convert("RGBA").getchannel("A").resize(source.size)
    painted_request = msgspec.structs.replace(
        request, width=source.width, height=source.height, source=None, mask=None
    )
    with Image.open(io.BytesIO(render(painted_request))) as painted_image:
        painted = painted_image.convert("RGB")
    out = io.BytesIO()
    Image.composite(source, painted, keep).save(out, format="PNG", compress_level=1)
    return out.getvalue()


# Drawing holds the GIL, so two threads draw as fast as more would; their own pool keeps a burst
# of drawings from queueing ahead of the storage writes in the loop's default executor.
_DRAWING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="local-provider")


class LocalProvider:
    name = "local"
    default_side = 512

    def __init__(self, delay_ms: int = 300) -> None:
        self.delay_s = delay_ms / 1000

    async def generate(self, request: ImageRequest) -> ImageResult:
        return await self._answer(render, request)

    async def edit(self, request: ImageRequest) -> ImageResult:
        return await self._answer(inpaint, request)

    async def _answer(
        self, draw: Callable[[ImageRequest], bytes], request: ImageRequest
    ) -> ImageResult:
        """Draws while the simulated generation time runs, as a remote provider computes during
        its latency, and answers when both are done: the delay is the provider's time, not the
        worker's CPU after it (with thousands of generations in flight, drawing after the wait
        made every result land in the same few seconds)."""
        loop = asyncio.get_running_loop()
        drawing = loop.run_in_executor(_DRAWING, draw, request)
        try:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            data = await drawing
        finally:
            drawing.cancel()
        return ImageResult(data=data, content_type="image/png", metadata={"renderer": "pillow"})
