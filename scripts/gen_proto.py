"""Generate the gRPC Python code and typed stubs from proto/ (`make proto`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def proto_files() -> list[Path]:
    """All .proto files under proto/, sorted."""
    return sorted((ROOT / "proto").rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc with the Python, gRPC and mypy stub plugins into out_dir."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    # protoc finds the mypy plugins (protoc-gen-mypy*) on PATH, next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    for proto in proto_files():
        args = [
            "protoc",
            f"-I{ROOT}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--mypy_out={out_dir}",
            f"--mypy_grpc_out={out_dir}",
            str(proto.relative_to(ROOT)),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
