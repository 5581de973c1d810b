"""Speech to text with PocketSphinx and the US English model its wheel ships, fully offline.

PocketSphinx's general English language model is weak on open speech; an agent that knows
what it expects to hear can pass ``phrases`` and get a small trigram model built from them
(over the same dictionary and acoustic model), which recognizes those phrases far better.

The decoder holds the GIL while it decodes, so a thread would still stall the event loop: it
runs in a worker process of its own (``sphinx_worker``, one per STT), fed over a pipe.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Sequence

from agent_jobrunner.voice.audio import MODEL_SAMPLE_RATE, Pcm
from agent_jobrunner.voice.interfaces import ProviderError, Transcript
from agent_jobrunner.voice.providers.sphinx_worker import HEADER

logger = logging.getLogger(__name__)


def normalize_phrase(text: str) -> str:
    """Lower case, words only (apostrophes kept), as the dictionary spells them."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower().replace("\u2019", "'")))


def build_language_model(phrases: Sequence[str], known: Callable[[str], bool]) -> str:
    """ARPA text of a trigram model over ``phrases``; words the dictionary lacks are left out."""
    from pocketsphinx.lm import ArpaBoLM  # type: ignore[import-untyped]

    lines: list[str] = []
    dropped: set[str] = set()
    for phrase in phrases:
        words = normalize_phrase(phrase).split()
        kept = [w for w in words if known(w)]
        dropped.update(set(words) - set(kept))
        if kept:
            lines.append(" ".join(kept))
    if not lines:
        raise ProviderError("none of the phrases has a word the dictionary knows")
    if dropped:
        logger.warning("words not in the dictionary, left out of the language model: %s", sorted(dropped))
    model = ArpaBoLM(text="\n".join(lines) + "\n", add_start=True)
    model.compute()
    with tempfile.TemporaryFile("w+") as out:
        model.write(out)
        out.seek(0)
        text: str = out.read()
        return text


# ------------------------------------------------------------------------------------ provider


class PocketSphinxSTT:
    """Batch and streaming recognition at 16 kHz. ``stt = await PocketSphinxSTT.load(phrases)``.

    One decoder serves one utterance at a time; ``aclose()`` ends its worker process.
    """

    sample_rate = MODEL_SAMPLE_RATE

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._calls = asyncio.Lock()  # one request/answer on the pipe at a time
        self.utterance = asyncio.Lock()  # one utterance on the decoder at a time

    @classmethod
    async def load(cls, phrases: Sequence[str] | None = None) -> PocketSphinxSTT:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agent_jobrunner.voice.providers.sphinx_worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        stt = cls(process)
        try:
            await stt.call(b"L", json.dumps(list(phrases) if phrases else None).encode())
        except BaseException:
            await stt.aclose()
            raise
        return stt

    async def call(self, op: bytes, payload: bytes = b"") -> str:
        """One request to the worker (shielded: a cancelled caller never splits request and answer)."""
        return await asyncio.shield(self._exchange(op, payload))

    async def _exchange(self, op: bytes, payload: bytes) -> str:
        async with self._calls:
            stdin, stdout = self._process.stdin, self._process.stdout
            assert stdin is not None
            assert stdout is not None
            try:
                stdin.write(HEADER.pack(op, len(payload)) + payload)
                await stdin.drain()
                status, size = HEADER.unpack(await stdout.readexactly(HEADER.size))
                answer = (await stdout.readexactly(size)).decode()
            except (OSError, asyncio.IncompleteReadError) as err:
                raise ProviderError(
                    f"the PocketSphinx worker is gone (exit {self._process.returncode})"
                ) from err
        if status != b"O":
            raise ProviderError(f"PocketSphinx: {answer}")
        return answer

    async def recognize(self, audio: Pcm) -> Transcript:
        _check_rate(audio)
        async with self.utterance:
            return Transcript(text=await self.call(b"D", audio.samples.tobytes()), language="en")

    def stream(self) -> PocketSphinxStream:
        return PocketSphinxStream(self)

    async def aclose(self) -> None:
        process = self._process
        if process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 2.0)
        except TimeoutError:
            process.kill()
            await process.wait()


class PocketSphinxStream:
    """Decodes as audio comes; ``finish`` ends the utterance and returns its transcript."""

    def __init__(self, stt: PocketSphinxSTT) -> None:
        self._stt = stt
        self._started = False
        self._done = False

    async def push(self, audio: Pcm) -> None:
        _check_rate(audio)
        if self._done:
            raise ProviderError("this stream has finished")
        if not self._started:
            await self._stt.utterance.acquire()
            self._started = True
            await self._stt.call(b"S")
        await self._stt.call(b"P", audio.samples.tobytes())

    async def finish(self) -> Transcript:
        if self._done:
            raise ProviderError("this stream has finished")
        self._done = True
        if not self._started:
            return Transcript(text="", language="en")
        try:
            return Transcript(text=await self._stt.call(b"F"), language="en")
        finally:
            self._stt.utterance.release()

    async def aclose(self) -> None:
        if self._started and not self._done:
            self._done = True
            try:
                await self._stt.call(b"F")
            finally:
                self._stt.utterance.release()


def _check_rate(audio: Pcm) -> None:
    if audio.sample_rate != MODEL_SAMPLE_RATE:
        raise ValueError(f"PocketSphinx takes {MODEL_SAMPLE_RATE} Hz audio, got {audio.sample_rate} Hz")
