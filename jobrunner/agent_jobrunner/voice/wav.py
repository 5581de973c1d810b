"""WAV (RIFF, 16-bit PCM) reading and writing, streaming headers included.

``espeak-ng --stdout`` and streaming speech APIs write the header before they know the length,
with a placeholder size; the data chunk then simply runs to the end of the stream.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from agent_jobrunner.voice.audio import Pcm, Samples

_PCM_FORMAT = 1
_EXTENSIBLE_FORMAT = 0xFFFE


class WavError(ValueError):
    """Not a 16-bit PCM WAV."""


@dataclasses.dataclass(frozen=True)
class WavHeader:
    """What the header of a WAV says, and where its samples start."""

    sample_rate: int
    channels: int
    data_offset: int
    # None: the header does not know (a streaming placeholder); read to the end
    data_size: int | None


def parse_header(head: bytes) -> WavHeader | None:
    """The header at the start of ``head``; None while more bytes are needed to find the data."""
    if len(head) < 12:
        return None
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE stream")
    offset = 12
    rate = channels = 0
    while True:
        if len(head) < offset + 8:
            return None
        chunk_id = head[offset : offset + 4]
        (size,) = struct.unpack_from("<I", head, offset + 4)
        body = offset + 8
        if chunk_id == b"data":
            if not rate:
                raise WavError("the data chunk comes before the fmt chunk")
            known = None if size in (0, 0xFFFFFFFF, 0x7FFFFFFF) or size > 0x7FFF0000 else size
            return WavHeader(rate, channels, body, known)
        if len(head) < body + size:
            return None
        if chunk_id == b"fmt ":
            fmt, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, body)
            if fmt not in (_PCM_FORMAT, _EXTENSIBLE_FORMAT) or bits != 16:
                raise WavError(f"only 16-bit PCM is supported (format {fmt}, {bits} bits)")
            if channels < 1 or rate < 1:
                raise WavError("bad channel count or sample rate")
        offset = body + size + (size & 1)


def mono(data: bytes, channels: int) -> Samples:
    usable = len(data) - len(data) % (2 * channels)
    samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).astype(np.int32).mean(axis=1).astype(np.int16)
    return samples


def decode(data: bytes) -> Pcm:
    """A whole WAV file, mixed down to mono."""
    header = parse_header(data)
    if header is None:
        raise WavError("truncated WAV header")
    end = len(data) if header.data_size is None else header.data_offset + header.data_size
    return Pcm(mono(data[header.data_offset : end], header.channels), header.sample_rate)


def encode(pcm: Pcm) -> bytes:
    data = pcm.samples.astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", _PCM_FORMAT, 1, pcm.sample_rate, pcm.sample_rate * 2, 2, 16)
    return b"".join(
        [
            b"RIFF",
            struct.pack("<I", 36 + len(data)),
            b"WAVE",
            b"fmt ",
            struct.pack("<I", len(fmt)),
            fmt,
            b"data",
            struct.pack("<I", len(data)),
            data,
        ]
    )
