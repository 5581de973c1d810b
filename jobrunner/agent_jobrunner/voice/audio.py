"""Mono 16-bit PCM: the one audio type of the pipeline, with resampling and fixed-size framing.

The room speaks 48 kHz in 10 ms frames; the models want 16 kHz (VAD, STT) or give their own
rate (TTS). :class:`Resampler` converts between rates as a stream (libsoxr through the RTC
SDK's ``AudioResampler``) and :class:`Framer` cuts any stream into frames of a fixed size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import numpy.typing as npt
from livekit import rtc

ROOM_SAMPLE_RATE = 48_000
MODEL_SAMPLE_RATE = 16_000
FRAME_MS = 10

Samples = npt.NDArray[np.int16]


def samples_of(data: bytes | bytearray | memoryview) -> Samples:
    """Little-endian 16-bit PCM bytes as an int16 array (a copy, owned by the caller)."""
    return np.frombuffer(bytes(data), dtype="<i2").astype(np.int16)


@dataclasses.dataclass(frozen=True)
class Pcm:
    """A piece of mono audio: int16 samples at ``sample_rate``."""

    samples: Samples
    sample_rate: int

    @classmethod
    def empty(cls, sample_rate: int) -> Pcm:
        return cls(np.zeros(0, dtype=np.int16), sample_rate)

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> Pcm:
        return cls(np.zeros(round(seconds * sample_rate), dtype=np.int16), sample_rate)

    @classmethod
    def from_frame(cls, frame: rtc.AudioFrame) -> Pcm:
        """A room frame, its channels mixed down to mono."""
        data = np.frombuffer(bytes(frame.data), dtype=np.int16)
        if frame.num_channels > 1:
            mixed = data.reshape(-1, frame.num_channels).astype(np.int32).mean(axis=1)
            data = mixed.astype(np.int16)
        return cls(data.copy(), frame.sample_rate)

    @classmethod
    def concat(cls, pieces: list[Pcm], sample_rate: int) -> Pcm:
        for piece in pieces:
            if piece.sample_rate != sample_rate:
                raise ValueError(f"cannot join {piece.sample_rate} Hz audio into {sample_rate} Hz")
        if not pieces:
            return cls.empty(sample_rate)
        return cls(np.concatenate([p.samples for p in pieces]).astype(np.int16), sample_rate)

    def to_frame(self) -> rtc.AudioFrame:
        return rtc.AudioFrame(self.samples.astype("<i2").tobytes(), self.sample_rate, 1, len(self.samples))

    def to_float(self) -> npt.NDArray[np.float32]:
        """Samples scaled to [-1, 1), as the models take them."""
        return (self.samples.astype(np.float32) / 32768.0).astype(np.float32)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    def __len__(self) -> int:
        return len(self.samples)

    def rms(self) -> float:
        if not len(self.samples):
            return 0.0
        return float(np.sqrt(np.mean(self.samples.astype(np.float64) ** 2)))

    def slice(self, start: float, end: float | None = None) -> Pcm:
        """The part between ``start`` and ``end`` seconds."""
        first = max(0, round(start * self.sample_rate))
        last = len(self.samples) if end is None else min(len(self.samples), round(end * self.sample_rate))
        return Pcm(self.samples[first:last].copy(), self.sample_rate)


class Resampler:
    """Streaming rate conversion; a pass-through when the rates are equal.

    Holds state between pushes (the filter's delay line), so one instance serves one stream.
    """

    def __init__(self, input_rate: int, output_rate: int) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self._native: rtc.AudioResampler | None = None
        if input_rate != output_rate:
            self._native = rtc.AudioResampler(
                input_rate, output_rate, num_channels=1, quality=rtc.AudioResamplerQuality.MEDIUM
            )

    def push(self, pcm: Pcm) -> Pcm:
        if pcm.sample_rate != self.input_rate:
            raise ValueError(f"this resampler takes {self.input_rate} Hz, got {pcm.sample_rate} Hz")
        if self._native is None:
            return pcm
        if not len(pcm):
            return Pcm.empty(self.output_rate)
        return self._collect(self._native.push(pcm.to_frame()))

    def flush(self) -> Pcm:
        """What the filter still holds at the end of the stream."""
        if self._native is None:
            return Pcm.empty(self.output_rate)
        return self._collect(self._native.flush())

    def _collect(self, frames: list[rtc.AudioFrame]) -> Pcm:
        return Pcm.concat([Pcm.from_frame(f) for f in frames], self.output_rate)


async def resample_stream(
    first: bytes, read: Callable[[], Awaitable[bytes]], rate: int, output_rate: int
) -> AsyncIterator[Pcm]:
    """16-bit PCM bytes, ``first`` then ``read()`` until it returns nothing (a process's stdout,
    an HTTP body), resampled to ``output_rate`` chunk by chunk as they arrive."""
    resampler = Resampler(rate, output_rate)
    leftover = first
    while True:
        usable = len(leftover) - len(leftover) % 2  # whole samples only; the odd byte waits
        if usable:
            out = resampler.push(Pcm(samples_of(leftover[:usable]), rate))
            if len(out):
                yield out
        leftover = leftover[usable:]
        chunk = await read()
        if not chunk:
            break
        leftover += chunk
    tail = resampler.flush()
    if len(tail):
        yield tail


class Framer:
    """Cuts a stream of audio into frames of exactly ``samples`` samples."""

    def __init__(self, sample_rate: int, samples: int) -> None:
        if samples <= 0:
            raise ValueError("a frame holds at least one sample")
        self.sample_rate = sample_rate
        self.samples = samples
        self._pending = np.zeros(0, dtype=np.int16)

    @classmethod
    def of_ms(cls, sample_rate: int, ms: int) -> Framer:
        if sample_rate * ms % 1000:
            raise ValueError(f"{ms} ms is not a whole number of samples at {sample_rate} Hz")
        return cls(sample_rate, sample_rate * ms // 1000)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def push(self, pcm: Pcm) -> list[Pcm]:
        if pcm.sample_rate != self.sample_rate:
            raise ValueError(f"this framer takes {self.sample_rate} Hz, got {pcm.sample_rate} Hz")
        data = np.concatenate([self._pending, pcm.samples]) if len(self._pending) else pcm.samples
        count = len(data) // self.samples
        frames = [
            Pcm(data[i * self.samples : (i + 1) * self.samples].copy(), self.sample_rate)
            for i in range(count)
        ]
        self._pending = data[count * self.samples :].copy()
        return frames

    def flush(self, pad: bool = True) -> list[Pcm]:
        """The incomplete last frame, padded with silence (or dropped when ``pad`` is false)."""
        rest, self._pending = self._pending, np.zeros(0, dtype=np.int16)
        if not len(rest) or not pad:
            return []
        padded = np.zeros(self.samples, dtype=np.int16)
        padded[: len(rest)] = rest
        return [Pcm(padded, self.sample_rate)]


class History:
    """The last ``keep`` seconds of a stream, addressed by absolute sample index."""

    def __init__(self, sample_rate: int, keep: float = 5.0) -> None:
        self.sample_rate = sample_rate
        self._keep = round(keep * sample_rate)
        self._data = np.zeros(0, dtype=np.int16)
        self._base = 0  # absolute index of self._data[0]

    @property
    def total(self) -> int:
        """Samples appended since the stream began."""
        return self._base + len(self._data)

    def append(self, pcm: Pcm) -> None:
        if pcm.sample_rate != self.sample_rate:
            raise ValueError(f"this history holds {self.sample_rate} Hz, got {pcm.sample_rate} Hz")
        data = np.concatenate([self._data, pcm.samples])
        drop = max(0, len(data) - self._keep)
        self._data = data[drop:]
        self._base += drop

    def since(self, index: int) -> Pcm:
        """Samples from absolute ``index`` to the end (what is still kept of them)."""
        start = max(0, index - self._base)
        return Pcm(self._data[start:].copy(), self.sample_rate)
