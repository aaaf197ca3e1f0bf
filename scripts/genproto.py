"""Regenerate the Python code for proto/ (the one command: `python scripts/genproto.py`).

Writes berth/v1/*_pb2.py, *_pb2_grpc.py and *.pyi stubs. With --check it
generates into a scratch folder and fails when the committed files differ,
which is how CI catches stale generated code.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PACKAGE_DIR = Path("berth") / "v1"
HEADER = "# Generated from proto/ by scripts/genproto.py. DO NOT EDIT.\n"


def generate(out_dir: Path) -> list[Path]:
    """Generate code for every .proto under proto/ into out_dir; return the files."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted((out_dir / PACKAGE_DIR).glob("*_pb2*.py*"))
    for path in generated:
        text = path.read_text()
        if not text.startswith(HEADER):
            path.write_text(HEADER + text)
    return generated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    options = parser.parse_args()
    if not options.check:
        for path in generate(ROOT):
            print(path.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch))
        stale = [
            str(PACKAGE_DIR / path.name)
            for path in fresh
            if not (ROOT / PACKAGE_DIR / path.name).exists()
            or not filecmp.cmp(path, ROOT / PACKAGE_DIR / path.name, shallow=False)
        ]
    if stale:
        print("stale generated code, run `python scripts/genproto.py`: " + ", ".join(stale))
        return 1
    print("generated code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
