"""Text to speech with the ``espeak-ng`` program (Debian package ``espeak-ng``), fully offline.

Each sentence runs one ``espeak-ng --stdout`` process; its WAV output is streamed as it is
read, so the first audio leaves before the sentence is fully synthesized.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
from collections.abc import AsyncGenerator, AsyncIterator

from agent_jobrunner.voice import wav
from agent_jobrunner.voice.audio import Pcm, resample_stream
from agent_jobrunner.voice.interfaces import ProviderError

ESPEAK_SAMPLE_RATE = 22_050
READ_BYTES = 4096


class EspeakTTS:
    sample_rate = ESPEAK_SAMPLE_RATE

    def __init__(
        self,
        voice: str = "en-us",
        words_per_minute: int = 150,
        pitch: int | None = None,
        binary: str = "espeak-ng",
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise ProviderError(f"{binary} is not installed (Debian package: espeak-ng)")
        self.binary = found
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.pitch = pitch

    def command(self) -> list[str]:
        command = [self.binary, "--stdout", "--stdin", "-v", self.voice, "-s", str(self.words_per_minute)]
        if self.pitch is not None:
            command += ["-p", str(self.pitch)]
        return command

    async def synthesize(self, text: str) -> AsyncGenerator[Pcm, None]:
        if not text.strip():
            return
        process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        stderr_task = asyncio.create_task(process.stderr.read())
        try:
            try:
                process.stdin.write(text.encode("utf-8"))
                await process.stdin.drain()
                process.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # it exited without reading: its exit code says why
            produced = False
            async for pcm in self._read(process.stdout):
                produced = True
                yield pcm
            code = await process.wait()
            stderr = (await stderr_task).decode(errors="replace").strip()
            if code != 0 or (not produced and stderr):
                raise ProviderError(f"espeak-ng exited with {code}: {stderr}")
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if not stderr_task.done():
                stderr_task.cancel()
            await asyncio.gather(stderr_task, return_exceptions=True)

    async def _read(self, stdout: asyncio.StreamReader) -> AsyncIterator[Pcm]:
        head = b""
        header: wav.WavHeader | None = None
        while header is None:
            chunk = await stdout.read(READ_BYTES)
            if not chunk:
                if head:
                    raise ProviderError("espeak-ng wrote a truncated WAV header")
                return
            head += chunk
            header = wav.parse_header(head)
        if header.channels != 1:
            raise ProviderError(f"espeak-ng wrote {header.channels} channels; expected mono")
        read = functools.partial(stdout.read, READ_BYTES)
        async for pcm in resample_stream(
            head[header.data_offset :], read, header.sample_rate, self.sample_rate
        ):
            yield pcm
