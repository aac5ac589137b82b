"""One decoder for the images and audio that tasks, the server and training read.

A media input arrives as a file path, a ``data:`` URI, a bare base64 string or raw bytes (an HTTP
upload). :func:`read_media` works out which, applies the size limit and returns a
:class:`MediaSource`: the bytes (or the file) plus how error messages name it. :func:`load_image` and
:func:`load_audio` decode a source and apply the pixel / duration limit. URLs are refused: aiforge
never fetches from the network on a user's behalf.

One set of error codes, whichever kind and whoever calls:

* ``AF-INPUT-001`` a named file does not exist, is not a file or cannot be read;
* ``AF-INPUT-002`` not a media input: a wrong type, a URL, or a path where paths are refused
  (the server without ``allow_local_paths``);
* ``AF-INPUT-003`` / ``AF-INPUT-004`` image / audio content that does not decode, including a
  ``data:`` URI whose payload is not valid base64;
* ``AF-INPUT-006`` over a :class:`MediaLimits` limit (bytes, image pixels, audio duration).

Pillow, numpy and the audio decoder (PyAV through faster-whisper) are imported on first use, so
listing the task cards or ``aiforge --help`` loads none of them.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from aiforge.errors import AiforgeError, require
from aiforge.lazy import lazy_module

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image, ImageOps
else:
    np = lazy_module("numpy")
    Image = lazy_module("PIL.Image")
    ImageOps = lazy_module("PIL.ImageOps")

MediaKind = Literal["image", "audio"]
UNDECODABLE: dict[MediaKind, str] = {"image": "AF-INPUT-003", "audio": "AF-INPUT-004"}
OVER_LIMIT = "AF-INPUT-006"
AUDIO_SAMPLING_RATE = 16000  # Whisper's input rate, the default of load_audio
# A string that is not an existing file is read as base64 only from this length on: shorter ones are
# far more likely mistyped paths (the smallest real PNG is 67 bytes = 92 base64 characters).
MIN_BASE64_CHARS = 64
MAX_PATH_CHARS = 4096  # longer strings are never file names (PATH_MAX on Linux)


def media_kind(field: str | None) -> MediaKind | None:
    """The media a task's input field holds ("image", "audio"); None for text and the like."""
    return next((kind for kind in get_args(MediaKind) if kind == field), None)


@dataclass(frozen=True)
class MediaLimits:
    """What one input may weigh. The defaults only stop inputs no task could use anyway."""

    max_bytes: int = 1 << 30  # the encoded file: 1 GiB
    # Pillow's own decompression-bomb error threshold (2 x Image.MAX_IMAGE_PIXELS), so the default
    # refuses exactly the images Pillow refused before this limit existed.
    max_pixels: int = 2 * 89_478_485
    # checked on the decoded samples: 6 h at 16 kHz is 1.4 GB of float32, a lecture fits, a
    # day-long recording does not
    max_duration_s: float = 6 * 3600.0


LIMITS = MediaLimits()


@dataclass(frozen=True)
class MediaSource:
    """A media input before decoding: its bytes or its file, and how messages name it."""

    origin: str
    data: bytes | None = None
    path: Path | None = None

    def read(self) -> bytes:
        """The encoded bytes (a file is read now; an unreadable one is AF-INPUT-001)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise AiforgeError(
                "AF-INPUT-001",
                f"cannot read file {self.origin}: {exc.strerror or exc}",
                "check that the file exists and is readable",
            ) from None


def read_media(
    value: Any,
    kind: MediaKind,
    *,
    name: str | None = None,
    allow_paths: bool = True,
    limits: MediaLimits = LIMITS,
) -> MediaSource:
    """Sniff what ``value`` is (path, ``data:`` URI, base64 string, bytes) -> a :class:`MediaSource`.

    ``name`` is what messages call the input (an upload's file name). With ``allow_paths=False``
    (the server, so a client cannot make it open its files) a string is only ever base64 or a
    ``data:`` URI, whatever its length.
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        origin = f"'{name}'" if name else f"<{len(raw)} bytes of {kind} data>"
        return _within_size(MediaSource(origin, data=raw), len(raw), kind, limits)
    if isinstance(value, Path):
        if not allow_paths:
            raise _paths_refused(kind)
        return _file(value.expanduser(), kind, limits)
    if not isinstance(value, str):
        raise AiforgeError(
            "AF-INPUT-002",
            f"cannot read {_an(kind)} from a {type(value).__name__}",
            f"pass a file path, a base64 string or the {kind} file's bytes",
        )
    text = value.strip()
    if text.startswith("data:"):
        return _data_uri(text, kind, name, limits)
    if text.startswith(("http://", "https://")):
        raise AiforgeError(
            "AF-INPUT-002",
            f"{kind} URL '{text[:200]}' is not fetched: aiforge does not download inputs",
            f"download the {kind} and pass the file path, or send its bytes / base64",
        )
    if allow_paths:
        path = Path(text).expanduser()
        if len(text) < MAX_PATH_CHARS and _exists(path):
            return _file(path, kind, limits)
    data = _b64decode(text) if len(text) >= MIN_BASE64_CHARS or not allow_paths else None
    if data is None:
        if not allow_paths:
            raise _paths_refused(kind)
        raise AiforgeError(
            "AF-INPUT-001",
            f"{kind} file '{text[:200]}' does not exist (nor is it base64)",
            "check the path (relative paths are read from the current directory)",
        )
    origin = f"'{name}'" if name else f"<base64 string, {len(text)} chars>"
    return _within_size(MediaSource(origin, data=data), len(data), kind, limits)


def _an(kind: MediaKind) -> str:
    return "an image" if kind == "image" else "audio"


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a long base64 string or a NUL byte is not a file name
        return False


def _file(path: Path, kind: MediaKind, limits: MediaLimits) -> MediaSource:
    try:
        is_file, size = path.is_file(), path.stat().st_size
    except OSError as exc:
        raise AiforgeError(
            "AF-INPUT-001",
            f"cannot read {kind} file '{path}': {exc.strerror or exc}",
            "check that the file exists and is readable",
        ) from None
    if not is_file:
        raise AiforgeError("AF-INPUT-001", f"{kind} path '{path}' is not a file", f"pass {_an(kind)} file")
    return _within_size(MediaSource(f"'{path}'", path=path), size, kind, limits)


def _data_uri(text: str, kind: MediaKind, name: str | None, limits: MediaLimits) -> MediaSource:
    header, _, payload = text.partition(",")
    shown = f"data URI '{header},...'"
    if ";base64" not in header:
        raise AiforgeError(
            UNDECODABLE[kind],
            f"{shown} is not base64-encoded",
            f"encode the file as data:{kind}/{'png' if kind == 'image' else 'wav'};base64,...",
        )
    # 4 base64 characters carry 3 bytes: refuse an oversized payload before decoding it
    _within_size(MediaSource(shown), len(payload) * 3 // 4, kind, limits)
    data = _b64decode(payload)
    if data is None:
        raise AiforgeError(
            UNDECODABLE[kind],
            f"{shown} holds invalid base64",
            f"send standard base64 (RFC 4648) of the {kind} file's bytes",
        )
    origin = f"'{name}'" if name else f"<data URI, {len(text)} chars>"
    return MediaSource(origin, data=data)


def _b64decode(text: str) -> bytes | None:
    """Standard or URL-safe base64 (whitespace ignored) -> bytes; None when it is not base64."""
    compact = "".join(text.split())
    altchars = b"-_" if "-" in compact or "_" in compact else None
    try:
        return base64.b64decode(compact, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _within_size(source: MediaSource, size: int, kind: MediaKind, limits: MediaLimits) -> MediaSource:
    if size > limits.max_bytes:
        raise AiforgeError(
            OVER_LIMIT,
            f"{kind} {source.origin} is {size:,} bytes, over the limit of {limits.max_bytes:,}",
            f"send a smaller {kind} file (re-encode or cut it)",
        )
    return source


def _paths_refused(kind: MediaKind) -> AiforgeError:
    return AiforgeError(
        "AF-INPUT-002",
        f"'{kind}' must be base64 or a data: URI over HTTP; file paths and URLs are not read by the server",
        "upload the file as multipart/form-data field 'file', or send its bytes base64-encoded "
        "(the server option allow_local_paths lets trusted clients name server files)",
    )


# ---- images ------------------------------------------------------------------------------------------


def load_image(
    value: Any, *, name: str | None = None, limits: MediaLimits = LIMITS
) -> Image.Image:
    """Any image input aiforge accepts (or a ``PIL.Image``) -> an upright RGB ``PIL.Image``.

    A file, a JSON base64 string and an upload of the same picture give the same pixels. EXIF
    orientation is applied because phone photos are stored sideways and models expect them upright.
    """
    if isinstance(value, Image.Image):
        return _to_rgb(value)
    source = read_media(value, "image", name=name, limits=limits)
    data = source.read()
    try:
        with Image.open(io.BytesIO(data)) as img:
            _within_pixels(img.size, source, limits)  # from the header, before decoding the pixels
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError:
        raise _too_many_pixels(source, limits) from None
    except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = (
            "not a recognised image format" if isinstance(exc, Image.UnidentifiedImageError) else str(exc)
        )
        raise AiforgeError(
            "AF-INPUT-003",
            f"image {source.origin} could not be decoded: {reason}",
            "pass a JPEG, PNG, WebP, BMP, GIF or TIFF file that opens in an image viewer",
        ) from None


def _within_pixels(size: tuple[int, int], source: MediaSource, limits: MediaLimits) -> None:
    if size[0] * size[1] > limits.max_pixels:
        raise _too_many_pixels(source, limits, size)


def _too_many_pixels(
    source: MediaSource, limits: MediaLimits, size: tuple[int, int] | None = None
) -> AiforgeError:
    shown = f" ({size[0]} x {size[1]})" if size else ""
    return AiforgeError(
        OVER_LIMIT,
        f"image {source.origin}{shown} has more than the limit of {limits.max_pixels:,} pixels",
        "downscale the image before sending it",
    )


def _to_rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


# ---- audio -------------------------------------------------------------------------------------------


def load_audio(
    value: Any,
    sampling_rate: int = AUDIO_SAMPLING_RATE,
    name: str | None = None,
    limits: MediaLimits = LIMITS,
) -> np.ndarray:
    """Any audio input aiforge accepts -> mono float32 samples at ``sampling_rate``.

    An already decoded 1-D/2-D array is taken as being at ``sampling_rate``. Every format FFmpeg
    reads works (wav, flac, mp3, ogg, m4a, webm...).
    """
    if isinstance(value, np.ndarray):
        return _within_duration(_to_mono(value), sampling_rate, "<decoded array>", limits)
    source = read_media(value, "audio", name=name, limits=limits)
    # a file goes to FFmpeg by name, so it is streamed from disk rather than read into memory first
    target = str(source.path) if source.path is not None else io.BytesIO(source.read())
    decode_audio = require("faster_whisper", "audio").decode_audio
    try:
        samples = decode_audio(target, sampling_rate=sampling_rate)
    except Exception as exc:  # av raises a dozen FFmpeg error types; all mean "cannot decode"
        raise AiforgeError(
            "AF-INPUT-004",
            f"could not decode audio {source.origin}: {type(exc).__name__}: {exc}",
            "pass a readable audio file (wav, flac, mp3, ogg, m4a...); check it plays, e.g. `ffprobe FILE`",
        ) from None
    if samples.size == 0:
        raise AiforgeError(
            "AF-INPUT-004",
            f"audio {source.origin} contains no samples",
            "pass a file with at least one audio frame",
        )
    return _within_duration(samples, sampling_rate, source.origin, limits)


def _to_mono(samples: np.ndarray) -> np.ndarray:
    """A decoded array -> 1-D float32; (n, channels) or (channels, n) are averaged to mono."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=int(np.argmin(samples.shape)))
    if samples.ndim != 1 or samples.size == 0:
        raise AiforgeError(
            "AF-INPUT-004",
            f"audio array has shape {samples.shape}; expected (samples,)",
            "pass mono samples, or (samples, channels)",
        )
    return samples


def _within_duration(samples: np.ndarray, sampling_rate: int, origin: str, limits: MediaLimits) -> np.ndarray:
    seconds = len(samples) / sampling_rate
    if seconds > limits.max_duration_s:
        raise AiforgeError(
            OVER_LIMIT,
            f"audio {origin} lasts {seconds:,.0f} s, over the limit of {limits.max_duration_s:,.0f} s",
            "cut the recording into shorter files",
        )
    return samples
