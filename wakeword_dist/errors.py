"""Exceptions that end a stage with a documented exit code (kept import-light for the CLI)."""

# EX_TEMPFAIL from sysexits.h: "try again later". slurm/train.sbatch requeues on it.
EXIT_REQUEUE = 75


class TrainingStopped(Exception):
    """All ranks agreed to stop on SIGTERM/SIGUSR1 and a checkpoint was written."""

    exit_code = EXIT_REQUEUE


class TrainingFailed(RuntimeError):
    """Training cannot go on (too much bad data, repeated non-finite losses)."""
