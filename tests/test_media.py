"""The one media decoder (aiforge.media): every input form, every limit, every error code."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image

from aiforge.errors import AiforgeError
from aiforge.media import MediaLimits, MediaSource, load_audio, load_image, media_kind, read_media

RATE = 16000


@pytest.fixture(scope="module")
def png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "dots.png"
    pixels = (np.arange(24 * 16 * 3) % 251).astype(np.uint8).reshape(16, 24, 3)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media") / "tone.wav"
    t = np.arange(RATE // 2) / RATE  # half a second of 440 Hz
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), RATE, subtype="PCM_16")
    return path


def every_form(path: Path) -> list[object]:
    """The same file as each input form aiforge accepts."""
    data = path.read_bytes()
    b64 = base64.b64encode(data).decode()
    wrapped = "\n".join(b64[i : i + 76] for i in range(0, len(b64), 76))  # MIME line breaks
    return [
        str(path),
        path,
        data,
        bytearray(data),
        memoryview(data),
        b64,
        wrapped,
        base64.urlsafe_b64encode(data).decode(),
        f"data:application/octet-stream;base64,{b64}",
        f"  {b64}  ",
    ]


def expect(code: str, call, *args, mentions: str = "", **kwargs) -> AiforgeError:  # noqa: ANN001
    with pytest.raises(AiforgeError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value
    assert mentions in info.value.message
    assert info.value.fix
    return info.value


# ---- sniffing ------------------------------------------------------------------------------------------


def test_every_form_reads_the_same_bytes(png: Path) -> None:
    for form in every_form(png):
        source = read_media(form, "image")
        assert isinstance(source, MediaSource)
        assert source.read() == png.read_bytes(), type(form)


def test_a_file_is_named_by_its_path_and_bytes_by_the_upload_name(png: Path) -> None:
    assert read_media(str(png), "image").path == png
    assert str(png) in read_media(str(png), "image").origin
    assert read_media(png.read_bytes(), "image", name="upload.png").origin == "'upload.png'"
    assert "bytes" in read_media(png.read_bytes(), "image").origin


def test_the_server_never_reads_paths_but_takes_short_base64(png: Path) -> None:
    short = base64.b64encode(b"abc").decode()  # 4 characters: a path, were paths allowed
    assert read_media(short, "image", allow_paths=False).read() == b"abc"
    expect("AF-INPUT-002", read_media, str(png), "image", allow_paths=False, mentions="file paths")
    expect("AF-INPUT-002", read_media, png, "audio", allow_paths=False, mentions="file paths")


@pytest.mark.parametrize(
    ("value", "kind", "code", "mentions"),
    [
        ("no/such/picture.jpg", "image", "AF-INPUT-001", "no/such/picture.jpg"),
        ("no/such/clip.wav", "audio", "AF-INPUT-001", "no/such/clip.wav"),
        (Path("no/such/clip.wav"), "audio", "AF-INPUT-001", "clip.wav"),
        (12345, "image", "AF-INPUT-002", "int"),
        ({"a": 1}, "audio", "AF-INPUT-002", "dict"),
        ("https://example.com/cat.jpg", "image", "AF-INPUT-002", "https://example.com/cat.jpg"),
        ("http://example.com/a.mp3", "audio", "AF-INPUT-002", "not fetched"),
        ("data:image/png,rawbytes", "image", "AF-INPUT-003", "not base64"),
        ("data:audio/wav,rawbytes", "audio", "AF-INPUT-004", "not base64"),
        ("data:image/png;base64,@@@not-base64@@@", "image", "AF-INPUT-003", "invalid base64"),
        ("data:audio/wav;base64,@@@not-base64@@@", "audio", "AF-INPUT-004", "invalid base64"),
        ("x" * 65 + "@", "audio", "AF-INPUT-001", "nor is it base64"),
    ],
)
def test_each_bad_input_has_its_code(value: object, kind: str, code: str, mentions: str) -> None:
    expect(code, read_media, value, kind, mentions=mentions)


def test_media_kind_of_a_task_field() -> None:
    assert [media_kind(f) for f in ("image", "audio", "text", None)] == ["image", "audio", None, None]


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    expect("AF-INPUT-001", read_media, str(tmp_path), "audio", mentions="not a file")


# ---- limits --------------------------------------------------------------------------------------------


def test_size_limit_holds_for_every_form(png: Path) -> None:
    limits = MediaLimits(max_bytes=len(png.read_bytes()) - 1)
    for form in every_form(png):
        expect("AF-INPUT-006", read_media, form, "image", limits=limits, mentions="over the limit")
    assert read_media(png, "image", limits=MediaLimits(max_bytes=len(png.read_bytes()))).read()


def test_pixel_limit_is_checked_from_the_header(png: Path) -> None:
    expect("AF-INPUT-006", load_image, png, limits=MediaLimits(max_pixels=24 * 16 - 1), mentions="24 x 16")
    assert load_image(png, limits=MediaLimits(max_pixels=24 * 16)).size == (24, 16)


def test_pillow_decompression_bomb_is_the_limit_error(png: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses over 2x this on open
    expect("AF-INPUT-006", load_image, png, mentions="pixels")


def test_duration_limit_for_files_and_arrays(wav: Path) -> None:
    limits = MediaLimits(max_duration_s=0.25)
    expect("AF-INPUT-006", load_audio, wav, limits=limits, mentions="over the limit of")
    expect("AF-INPUT-006", load_audio, np.zeros(RATE), limits=limits, mentions="decoded array")
    assert len(load_audio(wav, limits=MediaLimits(max_duration_s=0.5))) == RATE // 2


# ---- decoding ------------------------------------------------------------------------------------------


def test_every_form_decodes_to_the_same_image_and_audio(png: Path, wav: Path) -> None:
    reference = np.asarray(Image.open(png).convert("RGB"))
    for form in every_form(png):
        assert np.array_equal(np.asarray(load_image(form)), reference)
    samples = load_audio(wav)
    assert samples.dtype == np.float32 and len(samples) == RATE // 2
    for form in every_form(wav):
        assert np.array_equal(load_audio(form), samples)


def test_undecodable_content_names_the_input() -> None:
    expect("AF-INPUT-003", load_image, b"plain text, not an image", mentions="bytes")
    expect("AF-INPUT-004", load_audio, b"plain text, not audio", name="talk.mp3", mentions="talk.mp3")
    expect("AF-INPUT-004", load_audio, np.zeros((0,), np.float32), mentions="shape")


def test_truncated_files_are_decode_errors(png: Path, wav: Path, tmp_path: Path) -> None:
    cut_png = tmp_path / "cut.png"
    cut_png.write_bytes(png.read_bytes()[:60])
    expect("AF-INPUT-003", load_image, str(cut_png), mentions="cut.png")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 99, 199)).save(buffer, format="JPEG")
    expect("AF-INPUT-003", load_image, buffer.getvalue()[: len(buffer.getvalue()) // 2], mentions="decoded")
    header_only = tmp_path / "cut.wav"
    header_only.write_bytes(wav.read_bytes()[:44])
    expect("AF-INPUT-004", load_audio, header_only, mentions="cut.wav")


def test_importing_the_decoder_loads_no_media_library() -> None:
    heavy = "('PIL', 'numpy', 'av', 'torch')"
    code = f"import sys, aiforge.media; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
