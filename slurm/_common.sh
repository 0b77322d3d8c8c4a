# shellcheck shell=bash
# Sourced by slurm/*.sbatch in the batch shell (which runs on the first node of the allocation).
#
# ww_setup          cd to the repository, activate .venv, pick the head node and rendezvous port
# ww_srun ENTRY...  one srun task per machine running slurm/_task.sh ENTRY..., with preemption:
#                   a SIGUSR1 to the batch shell (#SBATCH --signal=B:USR1@<s>) is forwarded to
#                   srun, which forwards it to every task; the run checkpoints and stops; the job
#                   is then requeued and the next start resumes (the scripts always pass
#                   train.resume=auto).
#
# Why the requeue test is "USR1 seen and the step failed" and not only "exit code 75": slurm
# delivers the forwarded signal to every process of the step (launcher and workers alike);
# torchrun inside accelerate launch handles it by stopping its workers (they checkpoint and exit
# 75) and then exits 1 itself, so 75 reaches srun only from single-process launches (measured).

ww_setup() {
    cd "${WW_ROOT:-$SLURM_SUBMIT_DIR}" || exit 2
    if [[ ! -f slurm/_task.sh ]]; then
        echo "[ww] $(pwd) is not the wakeword-dist repository: submit from its root or set WW_ROOT" >&2
        exit 2
    fi
    if [[ -z ${VIRTUAL_ENV:-} && -f .venv/bin/activate ]]; then
        # shellcheck disable=SC1091
        source .venv/bin/activate
    fi
    WW_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
    # One port per job, so jobs sharing a node do not collide; a requeued job keeps its port.
    WW_PORT=${WW_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
    export WW_HEAD_NODE WW_PORT
    echo "[ww] job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST:" \
        "$SLURM_NTASKS task(s), head $WW_HEAD_NODE:$WW_PORT, $(date -Is)" >&2
}

WW_PREEMPTED=0
WW_INTERRUPTED=0
WW_SRUN_PID=

ww_on_usr1() {
    WW_PREEMPTED=1
    WW_INTERRUPTED=1
    echo "[ww] SIGUSR1 (preemption / time-limit warning): forwarding to srun ${WW_SRUN_PID:-<not started>}" >&2
    if [[ -n $WW_SRUN_PID ]]; then kill -USR1 "$WW_SRUN_PID" 2>/dev/null || true; fi
    return 0
}

ww_srun() {
    trap ww_on_usr1 USR1
    # --wait: once the first task (machine) has exited, the others get WW_SRUN_WAIT seconds before
    # srun kills them, so a crashed machine does not leave its peers hanging in a collective.
    # Not --kill-on-bad-exit: on preemption every machine's launcher exits non-zero, and that flag
    # would kill machine 0 while it is still writing the checkpoint (measured).
    srun --wait="${WW_SRUN_WAIT:-300}" slurm/_task.sh "$@" &
    WW_SRUN_PID=$!
    local rc=0 again
    wait "$WW_SRUN_PID" || rc=$?
    # A trapped signal makes `wait` return early (status > 128) while srun still runs: wait again.
    # 127 means the status was already collected.
    while [[ $WW_INTERRUPTED == 1 ]]; do
        WW_INTERRUPTED=0
        again=0
        wait "$WW_SRUN_PID" || again=$?
        (( again == 127 )) && break
        rc=$again
    done
    echo "[ww] step finished: exit $rc, preempted=$WW_PREEMPTED, $(date -Is)" >&2
    if (( rc == 75 || (WW_PREEMPTED == 1 && rc != 0) )); then
        echo "[ww] requeueing job $SLURM_JOB_ID; the next start resumes from the last checkpoint" >&2
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
    return "$rc"
}
