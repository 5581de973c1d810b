"""Generate the Python code of the runner stream protocol: ``make proto``.

Output goes to ``jobrunner/agent_jobrunner/protocol/_generated/`` (the runner is the base
install, and the operator imports it from there), with mypy stubs. ``--check`` regenerates
into a temporary folder and fails if the committed code differs, as CI does.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "jobrunner" / "agent_jobrunner" / "protocol" / "_generated"
PY_PACKAGE = "agent_jobrunner.protocol._generated"


def generate(out: Path) -> None:
    protos = sorted(p.relative_to(PROTO_DIR) for p in PROTO_DIR.rglob("*.proto"))
    out.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *map(str, protos),
    ]
    subprocess.run(cmd, check=True, cwd=ROOT)
    # protoc writes imports rooted at the proto path; root them at our package instead
    for path in out.rglob("*.py*"):
        text = path.read_text()
        text = re.sub(r"^from agentoperator\.", f"from {PY_PACKAGE}.agentoperator.", text, flags=re.M)
        text = re.sub(r"^import agentoperator\.", f"import {PY_PACKAGE}.agentoperator.", text, flags=re.M)
        path.write_text(text)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


def differences(a: Path, b: Path) -> list[str]:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    diffs = [f"only in one: {p}" for p in sorted(files_a ^ files_b)]
    diffs += [str(p) for p in sorted(files_a & files_b) if not filecmp.cmp(a / p, b / p, shallow=False)]
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is out of date")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            diffs = differences(Path(tmp), OUT_DIR)
        if diffs:
            print(
                "generated protocol code is out of date with proto/ (run `make proto`):", *diffs, sep="\n  "
            )
            return 1
        print("generated protocol code is up to date")
        return 0
    shutil.rmtree(OUT_DIR, ignore_errors=True)
    generate(OUT_DIR)
    print(f"generated into {OUT_DIR.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
