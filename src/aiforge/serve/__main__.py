"""``python -m aiforge.serve SPEC_OR_YAML... [--host H] [--port P]``: the server without the CLI wrapper
(used by the tests and the benchmark; `aiforge serve` is the user-facing command)."""

from __future__ import annotations

import argparse
import sys

from aiforge.errors import AiforgeError
from aiforge.serve import is_config_file, load_settings, run_server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiforge.serve")
    parser.add_argument("specs", nargs="+", help="serve.yaml, or model specs [NAME=]TASK[:MODEL]")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    config = next((s for s in args.specs if is_config_file(s)), None)
    models = [s for s in args.specs if s != config]
    try:
        run_server(load_settings(config, models, overrides={"host": args.host, "port": args.port}))
    except AiforgeError as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
