"""Generates Python code and .pyi stubs from protos/ into gen/, or checks gen/ is current.

`python -m servicekit.protogen gen|check`. The generated code is committed so that imports
work from a plain checkout; `check` regenerates into a temporary folder and fails on any
difference, so it can never go stale unnoticed.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"


def generate(out: Path) -> None:
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    # The mypy-protobuf plugins live beside this interpreter, which may not be on PATH.
    bindir = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    for directory in [out, *(d for d in out.rglob("*") if d.is_dir())]:
        if directory != out:
            (directory / "__init__.py").touch()
    (out / "loom" / "py.typed").touch()


def _files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def sync() -> None:
    """Regenerates into a temporary folder, then replaces only what changed, so a process
    importing gen/ meanwhile never sees it half-written."""
    import os
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = _files(fresh), _files(GEN_ROOT) if GEN_ROOT.exists() else set()
        for rel in sorted(want):
            target = GEN_ROOT / rel
            if rel in have and filecmp.cmp(fresh / rel, target, shallow=False):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            staged = target.with_name(f".{target.name}.tmp")
            shutil.copyfile(fresh / rel, staged)
            os.replace(staged, target)
        for rel in sorted(have - want):
            (GEN_ROOT / rel).unlink()


def check() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        want, have = _files(fresh), _files(GEN_ROOT)
        stale = sorted(str(p) for p in want ^ have)
        stale += sorted(
            str(p) for p in want & have if not filecmp.cmp(fresh / p, GEN_ROOT / p, shallow=False)
        )
    if stale:
        print("gen/ is stale; run `make proto` and commit. Differing files:", *stale, sep="\n  ")
        return 1
    print("gen/ matches protos/")
    return 0


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "gen"
    if command == "gen":
        sync()
        return 0
    if command == "check":
        return check()
    print("usage: python -m servicekit.protogen gen|check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
