"""Ray job entrypoint for the nightly incremental run.

    ray job submit --working-dir . -- python -m jobs.nightly_clean --source s3://bucket/photos/ \\
        --out s3://bucket/faceqc/ [--profile NAME] [--config FILE]

Inside a Ray job, RAY_ADDRESS is set and the run joins that cluster.  Started again after a
failure with the same arguments, it resumes the unfinished run (see pipeline/nightly.py)."""

import os
import sys

from pipeline.cli import main

if __name__ == "__main__":
    argv = ["nightly", *sys.argv[1:]]
    if os.environ.get("RAY_ADDRESS") and "--address" not in argv:
        argv += ["--address", "auto"]
    sys.exit(main(argv))
