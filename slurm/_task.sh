#!/usr/bin/env bash
# One SLURM task = one accelerate "machine". Run by `srun` from the sbatch scripts, never by hand:
#
#   srun slurm/_task.sh <entry> [entry args...]      e.g. launch/train.py --config c.yaml k=v
#                                                    or   -m wakeword_dist.cli annotate --config c.yaml
#
# Everything task-specific is read HERE, inside the task: reading $SLURM_PROCID in the batch
# script (or unescaped in `srun bash -c "..."`) gives 0 on every node.
#
# machine rank = SLURM_PROCID and machines = SLURM_NTASKS. With the scripts' one task per node
# these equal SLURM_NODEID / SLURM_NNODES; they also stay right when two tasks share one node
# (the CI cluster stands one host in for two nodes, where SLURM_NODEID is 0 for both).
#
# Environment (set by slurm/_common.sh or the user):
#   WW_HEAD_NODE          host of machine rank 0 (first host of the allocation)
#   WW_PORT               rendezvous port on the head node
#   WW_CPU=1              CPU run: ACCELERATE_USE_CPU=1 and --multi_gpu (gloo); see docs/distributed.md
#   WW_PROCS_PER_NODE     processes per machine; default SLURM_GPUS_ON_NODE, else 1
#   WW_ACCELERATE_CONFIG  optional accelerate YAML (launch/accelerate/*.yaml); flags below override it
#   WW_MIXED_PRECISION    no | fp16 | bf16 launcher default (the YAML's when a config is given)
#   WW_SHUTDOWN_TIMEOUT   seconds torchrun waits for workers to checkpoint after a signal (default 100)
set -euo pipefail

machine_rank=${SLURM_PROCID:?run me through srun}
num_machines=${SLURM_NTASKS:-1}
procs_per_machine=${WW_PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
num_processes=$(( procs_per_machine * num_machines ))  # accelerate wants the total over machines

args=()
[[ -n ${WW_ACCELERATE_CONFIG:-} ]] && args+=(--config_file "$WW_ACCELERATE_CONFIG")
if [[ ${WW_CPU:-0} == 1 ]]; then
    # `accelerate launch --cpu --num_processes N` starts ONE process, and a multi-GPU launch on a
    # host without CUDA starts N processes that each train alone unless ACCELERATE_USE_CPU=1.
    export ACCELERATE_USE_CPU=1
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
(( num_processes > 1 )) && args+=(--multi_gpu)
args+=(--num_processes "$num_processes" --num_machines "$num_machines")
if (( num_machines > 1 )); then
    # c10d rendezvous: the store lives on machine rank 0. is_host is explicit because when two
    # tasks share a host both would otherwise claim the store (first one wins, the other's
    # accelerate port check then fails).
    is_host=$(( machine_rank == 0 ? 1 : 0 ))
    args+=(--machine_rank "$machine_rank" --main_process_ip "${WW_HEAD_NODE:?}"
           --main_process_port "${WW_PORT:?}" --rdzv_backend c10d --rdzv_conf "is_host=$is_host")
else
    args+=(--main_process_port 0)  # any free port on this host
fi
if [[ -z ${WW_ACCELERATE_CONFIG:-} ]]; then
    args+=(--mixed_precision "${WW_MIXED_PRECISION:-no}" --dynamo_backend no)  # silences the defaults warning
elif [[ -n ${WW_MIXED_PRECISION:-} ]]; then
    args+=(--mixed_precision "$WW_MIXED_PRECISION")
fi

# torchrun only forwards SIGTERM/INT/HUP/QUIT to its workers by default; without SIGUSR1 in this
# list the agent simply dies on the preemption warning and the workers never checkpoint.
export PET_SIGNALS_TO_HANDLE=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${WW_SHUTDOWN_TIMEOUT:-100}

echo "[ww task $machine_rank/$num_machines on $(hostname)] accelerate launch ${args[*]} $*" >&2
exec accelerate launch "${args[@]}" "$@"
