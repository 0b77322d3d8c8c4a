"""Training entry point: `accelerate launch launch/train.py --config configs/<x>.yaml [key=value ...]`.

Also runs as plain `python launch/train.py ...` (one process: the debug mode). The job
(baseline | distill | teacher) comes from `train.job` in the config or an override.
Exit codes: 0 done, 1 error, 2 config error, 75 stopped by SIGTERM/SIGUSR1 after a checkpoint.
"""

import argparse

from wakeword_dist.cli import exit_with, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    job_args = ["--config", args.config] if args.config else []
    exit_with(main(["train", *job_args, *args.overrides]))
