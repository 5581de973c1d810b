"""Audio plumbing: resampling between the room and the models, fixed-size frames, WAV."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from livekit import rtc

from agent_jobrunner.voice import wav
from agent_jobrunner.voice.audio import Framer, History, Pcm, Resampler

pytestmark = pytest.mark.unit


def tone(hz: float, seconds: float, rate: int, amplitude: float = 8000) -> Pcm:
    t = np.arange(round(seconds * rate)) / rate
    return Pcm((np.sin(2 * np.pi * hz * t) * amplitude).astype(np.int16), rate)


def dominant_hz(pcm: Pcm) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / pcm.sample_rate)[int(np.argmax(spectrum))])


def stream_through(resampler: Resampler, pcm: Pcm, piece: int) -> Pcm:
    out = [
        resampler.push(Pcm(pcm.samples[i : i + piece], pcm.sample_rate)) for i in range(0, len(pcm), piece)
    ]
    return Pcm.concat([*out, resampler.flush()], resampler.output_rate)


@pytest.mark.parametrize(
    ("source", "target", "piece"),
    [(48_000, 16_000, 480), (16_000, 48_000, 160), (22_050, 48_000, 441), (24_000, 48_000, 1000)],
)
def test_resampling_keeps_pitch_and_duration(source: int, target: int, piece: int) -> None:
    out = stream_through(Resampler(source, target), tone(440, 1.0, source), piece)
    assert out.sample_rate == target
    assert out.duration == pytest.approx(1.0, abs=0.01)
    assert dominant_hz(out) == pytest.approx(440, abs=2)
    # the level survives too (no clipping, no large loss)
    assert out.rms() == pytest.approx(8000 / np.sqrt(2), rel=0.1)


def test_resampling_drops_what_the_lower_rate_cannot_hold() -> None:
    # 12 kHz is above 16 kHz audio's Nyquist limit (8 kHz): it must not fold back into the band
    out = stream_through(Resampler(48_000, 16_000), tone(12_000, 0.5, 48_000), 480)
    assert out.rms() < 8000 / np.sqrt(2) * 0.05


def test_same_rate_is_a_pass_through() -> None:
    pcm = tone(300, 0.1, 16_000)
    resampler = Resampler(16_000, 16_000)
    assert resampler.push(pcm) is pcm
    assert len(resampler.flush()) == 0


def test_resampler_refuses_the_wrong_input_rate() -> None:
    with pytest.raises(ValueError, match="48000 Hz"):
        Resampler(48_000, 16_000).push(tone(440, 0.01, 16_000))


@pytest.mark.parametrize(("rate", "ms", "size"), [(48_000, 10, 480), (48_000, 20, 960), (16_000, 10, 160)])
def test_framer_cuts_exact_frames(rate: int, ms: int, size: int) -> None:
    framer = Framer.of_ms(rate, ms)
    pcm = tone(440, 0.1234, rate)
    frames = []
    for start in range(0, len(pcm), 333):  # pieces that never line up with frames
        frames += framer.push(Pcm(pcm.samples[start : start + 333], rate))
    assert all(len(f) == size for f in frames)
    assert len(frames) == len(pcm) // size
    assert framer.pending == len(pcm) % size
    (last,) = framer.flush()
    assert len(last) == size
    joined = np.concatenate([f.samples for f in frames] + [last.samples[: len(pcm) % size]])
    assert np.array_equal(joined, pcm.samples)  # nothing lost, nothing reordered
    assert not np.any(last.samples[len(pcm) % size :])  # padded with silence
    assert framer.flush() == []


def test_framer_refuses_a_fractional_frame() -> None:
    with pytest.raises(ValueError, match="whole number"):
        Framer.of_ms(22_050, 10)


def test_stereo_frame_is_mixed_to_mono() -> None:
    left = np.full(480, 1000, dtype=np.int16)
    right = np.full(480, 3000, dtype=np.int16)
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    frame = rtc.AudioFrame(interleaved.tobytes(), 48_000, 2, 480)
    pcm = Pcm.from_frame(frame)
    assert pcm.sample_rate == 48_000
    assert len(pcm) == 480
    assert np.all(pcm.samples == 2000)


def test_pcm_frame_round_trip() -> None:
    pcm = tone(440, 0.02, 48_000)
    back = Pcm.from_frame(pcm.to_frame())
    assert back.sample_rate == 48_000
    assert np.array_equal(back.samples, pcm.samples)


def test_history_addresses_absolute_samples_and_forgets_old_ones() -> None:
    history = History(16_000, keep=1.0)
    for i in range(30):  # 3 s in 100 ms pieces, each piece's samples = its number
        history.append(Pcm(np.full(1600, i, dtype=np.int16), 16_000))
    assert history.total == 48_000
    recent = history.since(47_000)
    assert len(recent) == 1000
    assert np.all(recent.samples == 29)
    assert np.array_equal(history.since(44_800).samples[:1600], np.full(1600, 28))
    assert len(history.since(0)) == 16_000  # only the kept second


def test_wav_round_trip() -> None:
    pcm = tone(440, 0.25, 22_050)
    back = wav.decode(wav.encode(pcm))
    assert back.sample_rate == 22_050
    assert np.array_equal(back.samples, pcm.samples)


def streaming_wav(pcm: Pcm, size: int, extra_chunk: bool) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, pcm.sample_rate, pcm.sample_rate * 2, 2, 16)
    head = b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
    if extra_chunk:
        head += b"LIST" + struct.pack("<I", 5) + b"abcde" + b"\0"  # odd size: padded
    return head + b"data" + struct.pack("<I", size) + pcm.samples.tobytes()


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0x7FFFFFFF, 0])
def test_wav_with_a_streaming_header_reads_to_the_end(size: int) -> None:
    # espeak-ng --stdout and streaming APIs write a placeholder size; the data runs to the end
    pcm = tone(440, 0.1, 22_050)
    back = wav.decode(streaming_wav(pcm, size, extra_chunk=True))
    assert np.array_equal(back.samples, pcm.samples)


def test_wav_header_needs_more_bytes_until_data_starts() -> None:
    data = streaming_wav(tone(440, 0.1, 16_000), 0xFFFFFFFF, extra_chunk=True)
    offset = data.index(b"data") + 8
    for cut in (0, 11, 20, 40, offset - 1):
        assert wav.parse_header(data[:cut]) is None
    header = wav.parse_header(data[:offset])
    assert header is not None
    assert (header.sample_rate, header.channels, header.data_offset, header.data_size) == (
        16_000,
        1,
        offset,
        None,
    )


def test_wav_that_is_not_16_bit_pcm_is_refused() -> None:
    fmt = struct.pack("<HHIIHH", 3, 1, 16_000, 64_000, 4, 32)  # float32
    data = b"RIFF" + struct.pack("<I", 36) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data\0\0\0\0"
    with pytest.raises(wav.WavError, match="16-bit PCM"):
        wav.decode(data)
    with pytest.raises(wav.WavError, match="RIFF"):
        wav.decode(b"ID3\x03" + bytes(40))
