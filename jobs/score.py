"""Ray job entrypoint for one scoring run.

    ray job submit --working-dir . -- python -m jobs.score SRC... --out DST [--profile NAME]

Inside a Ray job, RAY_ADDRESS is set and the run joins that cluster."""

import os
import sys

from pipeline.cli import main

if __name__ == "__main__":
    argv = ["score", *sys.argv[1:]]
    if os.environ.get("RAY_ADDRESS") and "--address" not in argv:
        argv += ["--address", "auto"]
    sys.exit(main(argv))
