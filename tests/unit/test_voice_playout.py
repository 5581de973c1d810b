"""Playback into the room's audio source: real-time pacing, interruption, and what was heard."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from agent_jobrunner.voice.audio import Pcm
from agent_jobrunner.voice.playout import AudioOutput, Playback

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

SENTENCES = [f"sentence number {i} has six words" for i in range(5)]


def second_of_sound(rate: int = 24_000) -> Pcm:
    return Pcm(np.full(rate, 1000, dtype=np.int16), rate)


async def play_all(playback: Playback, tag: int = 0) -> None:
    for index, text in enumerate(SENTENCES):
        await playback.write(index, text, tag, second_of_sound())
    await playback.finish()


async def test_playback_is_paced_in_real_time_and_fully_heard() -> None:
    output = AudioOutput(queue_ms=200)
    try:
        playback = output.playback()
        t0 = time.monotonic()
        await playback.write(0, "one two three four", 0, Pcm(np.full(48_000, 1000, dtype=np.int16), 48_000))
        queued = time.monotonic() - t0
        await playback.finish()
        total = time.monotonic() - t0
    finally:
        await output.aclose()
    assert 0.7 < queued < 1.1  # held back by the 200 ms source queue, not written at once
    assert 0.95 < total < 1.5
    assert playback.first_frame_at is not None
    assert playback.first_frame_at - t0 < 0.05
    assert playback.played == pytest.approx(1.0, abs=0.03)
    assert playback.heard_text() == "one two three four"


async def test_interruption_stops_at_once_and_keeps_what_was_heard() -> None:
    output = AudioOutput(queue_ms=200)
    try:
        for _ in range(2):  # and again right away: the source takes the next reply at once
            playback = output.playback()
            task = asyncio.create_task(play_all(playback))
            await asyncio.sleep(1.5)
            task.cancel()
            playback.interrupt()
            await asyncio.gather(task, return_exceptions=True)
            assert playback.interrupted
            assert playback.played == pytest.approx(1.5, abs=0.25)
            assert playback.heard_text() in (
                f"{SENTENCES[0]} sentence number",
                f"{SENTENCES[0]} sentence number 1",
                f"{SENTENCES[0]} sentence",
            )
            played = playback.played
            await asyncio.sleep(0.3)
            assert playback.played == played  # frozen at the cut
            await playback.write(9, "too late", 0, second_of_sound())  # ignored after the cut
            assert playback.played == played

            after = output.playback()
            t0 = time.monotonic()
            await after.write(0, "next", 0, Pcm(np.full(9600, 1000, dtype=np.int16), 48_000))
            await after.finish()
            assert time.monotonic() - t0 < 0.6
            assert after.heard_text() == "next"
    finally:
        await output.aclose()


async def test_heard_text_by_part() -> None:
    output = AudioOutput()
    try:
        playback = output.playback()
        await playback.write(0, "before the tool call", 0, Pcm(np.full(4800, 1000, dtype=np.int16), 48_000))
        await playback.write(1, "after it", 1, Pcm(np.full(4800, 1000, dtype=np.int16), 48_000))
        await playback.finish()
    finally:
        await output.aclose()
    assert playback.heard_text() == "before the tool call after it"
    assert playback.heard_text(tag=1) == "after it"
    assert playback.heard_text(tag=0) == "before the tool call"
