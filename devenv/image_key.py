"""The cache key of an image build: what a Dockerfile build reads, hashed.

An image is rebuilt exactly when its key changes. The key covers the Dockerfile's text, every
file its ``COPY``/``ADD`` instructions take from the build context (path, mode and content;
minus what the context's ``.dockerignore`` excludes, as the builder would), the build arguments
and the keys of the images it starts from. Pure functions of files on disk; no builder here.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath


def instructions(dockerfile_text: str) -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile_text)
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.split()))
    return out


def copied_sources(dockerfile_text: str) -> list[str]:
    """The build-context paths that ``COPY``/``ADD`` take (``--from`` copies excluded)."""
    sources: list[str] = []
    for word, args in instructions(dockerfile_text):
        if word not in ("COPY", "ADD"):
            continue
        if any(a.startswith("--from") for a in args):
            continue
        paths = [a for a in args if not a.startswith("--")]
        if paths and paths[0].startswith("["):
            raise ValueError(f"JSON-form {word} is not supported by the image cache: {args}")
        sources.extend(paths[:-1])
    return sources


def ignore_patterns(context: Path) -> list[str]:
    """The context's ``.dockerignore`` lines (blank lines and comments dropped)."""
    path = context / ".dockerignore"
    if not path.is_file():
        return []
    patterns = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            if line.startswith("!"):
                raise ValueError(f"exceptions ({line!r}) in .dockerignore are not supported")
            patterns.append(line)
    return patterns


def ignored(relative: PurePosixPath, patterns: Sequence[str]) -> bool:
    """Whether a context path is excluded: ``**/name`` matches a path component at any depth,
    any other pattern the leading components (so a matched directory excludes its contents)."""
    parts = relative.parts
    for pattern in patterns:
        if pattern.startswith("**/"):
            glob = pattern[3:]
            if "/" in glob:
                raise ValueError(f"only single-component **/ patterns are supported: {pattern!r}")
            if any(fnmatch.fnmatchcase(part, glob) for part in parts):
                return True
        else:
            n = len(PurePosixPath(pattern).parts)
            if len(parts) >= n and fnmatch.fnmatchcase("/".join(parts[:n]), pattern.rstrip("/")):
                return True
    return False


def context_files(context: Path, sources: Sequence[str]) -> Iterator[Path]:
    """Every file the sources name (directories walked), sorted, ignores applied."""
    patterns = ignore_patterns(context)
    seen: set[Path] = set()
    for source in sources:
        root = context / source.rstrip("/")
        if not root.exists():
            raise FileNotFoundError(f"the Dockerfile copies {source!r}, which is not in {context}")
        candidates = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            rel = PurePosixPath(path.relative_to(context).as_posix())
            if path not in seen and not ignored(rel, patterns):
                seen.add(path)
                yield path


def copy_context(dockerfile: Path, context: Path, into: Path) -> Path:
    """Copy what a build of ``dockerfile`` reads from ``context`` (the files it copies, the
    Dockerfile, the ``.dockerignore``) into ``into``, as a scratch build context."""
    files = list(context_files(context, copied_sources(dockerfile.read_text())))
    files += [p for p in (dockerfile, context / ".dockerignore") if p.is_file()]
    for path in files:
        target = into / path.relative_to(context)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return into


def input_key(
    dockerfile: Path,
    context: Path,
    build_args: Mapping[str, str],
    parent_keys: Sequence[str] = (),
) -> str:
    """A short hash of everything the build of ``dockerfile`` in ``context`` reads."""
    text = dockerfile.read_text()
    h = hashlib.sha256()
    h.update(b"dockerfile\0" + text.encode() + b"\0")
    for path in context_files(context, copied_sources(text)):
        rel = path.relative_to(context).as_posix()
        mode = stat.S_IMODE(path.stat().st_mode)
        h.update(f"file\0{rel}\0{mode:o}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for name in sorted(build_args):
        h.update(f"arg\0{name}={build_args[name]}\0".encode())
    for key in parent_keys:
        h.update(f"parent\0{key}\0".encode())
    return h.hexdigest()[:12]
