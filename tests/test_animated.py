"""`animated=true` apart from the per-backend contract (tests/test_backend_contract.py) and the routing cases
(tests/test_routing.py): the frame cap, the pixel cap (refused by the renderer and, from the probe, by the API),
`format=auto` for an animation, the settings' defaults, and a job over HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips
from support import images
from support.renditions import close, only
from support.service import Service

from gpu_worker.backends.vips import VipsBackend
from thumbify.animation import DEFAULT_MAX_FRAMES, DEFAULT_MAX_PIXELS, AnimationLimits, check_animation, output_pixels
from thumbify.errors import AnimationTooLarge, InvalidOptions
from thumbify.settings import Settings
from thumbify.spec import Format, ThumbnailSpec, negotiate_format

COLOURS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (240, 220, 40), (200, 40, 200)]
DELAYS = [30, 60, 90, 120, 150]


def _source(tmp_path: Path, fmt: str = "gif") -> Path:
    path = tmp_path / f"anim.{fmt}"
    path.write_bytes(images.animated(fmt, COLOURS, 80, 60, delays=DELAYS, loop=3))
    return path


def _pages(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "", n=-1)


def test_the_frame_cap_keeps_the_first_frames_with_their_delays(tmp_path: Path) -> None:
    backend = VipsBackend(animation=AnimationLimits(max_frames=3))
    spec = ThumbnailSpec(sizes="40", format="webp", animated=True)
    r = only(backend.render(_source(tmp_path), "gif", spec, "a"))
    image = _pages(r.data)
    assert image.get("n-pages") == 3 and image.get("delay") == DELAYS[:3] and image.get("loop") == 3
    for i, colour in enumerate(COLOURS[:3]):
        frame = image.crop(0, i * r.height, r.width, r.height)
        assert close([frame.extract_band(b).avg() for b in range(3)], colour, 8)


def test_the_pixel_cap_refuses_in_the_renderer(tmp_path: Path) -> None:
    spec = ThumbnailSpec(sizes="40,20", format="webp", animated=True)
    # 5 frames of 40x30 and 20x15: 7,500 pixels.
    assert output_pixels(spec, 80, 60, 5) == 5 * (40 * 30 + 20 * 15)
    backend = VipsBackend(animation=AnimationLimits(max_pixels=7_499))
    with pytest.raises(AnimationTooLarge, match="7,500 output pixels; the limit is 7,499"):
        backend.render(_source(tmp_path), "gif", spec, "a")
    assert (
        len(VipsBackend(animation=AnimationLimits(max_pixels=7_500)).render(_source(tmp_path), "gif", spec, "a")) == 2
    )
    # The frame cap counts first: 2 frames are 3,000 pixels.
    capped = VipsBackend(animation=AnimationLimits(max_frames=2, max_pixels=3_000))
    assert len(capped.render(_source(tmp_path), "gif", spec, "a")) == 2


def test_the_pixel_cap_ignores_what_is_not_animated() -> None:
    limits = AnimationLimits(max_pixels=1)
    check_animation(ThumbnailSpec(animated=False, format="webp"), "gif", 800, 600, 50, limits)
    check_animation(ThumbnailSpec(animated=True, format="webp"), "gif", 800, 600, 1, limits)  # a still
    check_animation(ThumbnailSpec(animated=True, format="jpeg"), "gif", 800, 600, 50, limits)  # first frame only
    check_animation(ThumbnailSpec(animated=True, format="webp"), "tiff", 800, 600, 50, limits)  # pages, not frames
    with pytest.raises(AnimationTooLarge):
        check_animation(ThumbnailSpec(animated=True, format="gif"), "webp", 800, 600, 2, limits)


def test_the_settings_defaults_are_the_renderers() -> None:
    fields = Settings.model_fields
    assert fields["animation_max_frames"].default == DEFAULT_MAX_FRAMES == AnimationLimits().max_frames == 200
    assert fields["animation_max_pixels"].default == DEFAULT_MAX_PIXELS == AnimationLimits().max_pixels


@pytest.mark.parametrize(
    ("accept", "animated", "expected"),
    [
        ("image/avif,image/webp,*/*", True, Format.webp),  # a browser: WebP, not AVIF (still only)
        ("*/*", True, Format.webp),
        (None, True, Format.webp),
        ("image/gif, image/jpeg", True, Format.gif),  # takes GIF but not WebP
        ("image/webp;q=0.5, image/gif", True, Format.gif),  # q-values first
        ("image/jpeg", True, Format.jpeg),  # neither: the first frame, negotiated as a still
        ("image/avif,image/webp,*/*", False, Format.avif),
        ("image/gif, image/jpeg", False, Format.jpeg),  # never GIF for a still
    ],
)
def test_auto_prefers_webp_for_an_animation(accept: str | None, animated: bool, expected: Format) -> None:
    assert negotiate_format(accept, False, animated) is expected


def test_auto_weighs_frames_only_when_animated_is_asked() -> None:
    def auto(pages: int, **options: str) -> Format:
        values = {"format": ["auto"], **{k: [v] for k, v in options.items()}}
        return ThumbnailSpec.from_options(values, "image/avif,image/webp,*/*", pages=pages)[0].format

    assert auto(5, animated="true") is Format.webp
    assert auto(1, animated="true") is Format.avif  # a still with the option: as today
    assert auto(5) is Format.avif  # the first frame, as today


@pytest.mark.parametrize("value", ["maybe", "2", ""])
def test_a_bad_animated_is_invalid_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidOptions) as caught:
        ThumbnailSpec.from_options({"animated": [value]})
    assert [e["field"] for e in caught.value.extra["errors"]] == ["animated"]


# -- over HTTP ------------------------------------------------------------------------------------------------------


def test_an_animated_gif_posted_with_animated_true_gives_an_animated_webp(service: Service) -> None:
    data = images.animated("gif", COLOURS, 80, 60, delays=DELAYS, loop=3)
    job = service.run_job(data, "anim.gif", sizes="40", format="auto", animated="true")
    assert job["status"] == "done", job
    assert job["spec"]["animated"] is True and job["spec"]["format"] == "webp"
    (thumb,) = job["thumbnails"]
    response = service.client.get(thumb["url"])
    assert response.headers["content-type"] == "image/webp"
    image = _pages(response.content)
    assert image.get("n-pages") == 5 and image.get("delay") == DELAYS and image.get("loop") == 3
    for i, colour in enumerate(COLOURS):
        frame = image.crop(0, i * 30, 40, 30)
        assert close([frame.extract_band(b).avg() for b in range(3)], colour, 8), i
    # GIF when asked, served as one.
    job = service.run_job(data, "anim.gif", sizes="40", format="gif", animated="true")
    response = service.client.get(job["thumbnails"][0]["url"])
    assert response.headers["content-type"] == "image/gif" and _pages(response.content).get("n-pages") == 5


def test_the_api_refuses_an_animation_over_the_pixel_cap(service: Service) -> None:
    """From the probed size, before any render: 5 frames of 4096x3072 are 62,914,560 output pixels."""
    data = images.animated("gif", COLOURS, 4096, 3072)
    r = service.submit(data, "big.gif", sizes="4096", format="webp", animated="true")
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"].endswith("/animation-too-large") and body["limit"] == DEFAULT_MAX_PIXELS, body
    assert service.submit(data, "big.gif", sizes="4096", format="webp").status_code == 202  # the first frame only


def test_a_bad_animated_over_http_is_422_naming_the_field(service: Service) -> None:
    r = service.submit(images.animated("gif"), "a.gif", animated="sometimes")
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["animated"], r.text
