#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for CI and for trying the slurm/ scripts.
#
#   launch/slurm_cluster.sh start    # install (Debian, root) if needed, write config, start daemons
#   launch/slurm_cluster.sh status   # daemons + sinfo
#   launch/slurm_cluster.sh stop     # stop the daemons this script started (by PID)
#
# No systemd is assumed: munged, slurmctld and slurmd are started by hand. Everything the
# cluster writes (config, state, spool, logs, PID files) lives under $WW_SLURM_DIR.
# Clients find the config through /etc/slurm/slurm.conf (a symlink made here when that path is
# free) or through SLURM_CONF=$WW_SLURM_DIR/slurm.conf.
#
# The node advertises $WW_SLURM_CPUS CPUs (default: at least 4, even on a 2-core box), so that
# two tasks standing in for two nodes plus a small job array fit at once; the extra "CPUs" are
# oversubscription, which the tiny CI jobs tolerate.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # munged, slurmctld, slurmd, runuser live there

WW_SLURM_DIR=${WW_SLURM_DIR:-/tmp/ww-slurm}
CONF=$WW_SLURM_DIR/slurm.conf
NCPU=$(nproc)
WW_SLURM_CPUS=${WW_SLURM_CPUS:-$(( NCPU < 4 ? 4 : NCPU ))}
NODE=$(hostname -s)

log() { echo "[slurm_cluster] $*" >&2; }

pid_alive() {  # pid_alive <pidfile>
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [[ $(id -u) -eq 0 ]] || { log "slurm is not installed and we are not root"; exit 1; }
    command -v apt-get >/dev/null || { log "slurm is not installed and apt-get is missing"; exit 1; }
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    # An existing package list is enough; refresh it only when the install fails.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
    fi
}

start_munge() {
    if pid_alive "$WW_SLURM_DIR/munged.pid" || pgrep -u munge -x munged >/dev/null; then
        return
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key
        else create-munge-key -f; fi
    fi
    chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge
    chmod 0700 /etc/munge /var/lib/munge /var/log/munge
    chmod 0755 /run/munge
    chmod 0400 /etc/munge/munge.key
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$WW_SLURM_DIR/munged.pid"
    for _ in $(seq 50); do [[ -S /run/munge/munge.socket.2 ]] && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || { log "munge self-test failed"; exit 1; }
}

write_config() {
    mkdir -p "$WW_SLURM_DIR"/{state,spool,log}
    cat >"$CONF" <<EOF
# Written by launch/slurm_cluster.sh: a single-node test cluster (no systemd, no accounting).
ClusterName=ww
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
# cred_expire also sets how long a requeued job waits before it may start again
# (default 120 s); 5 s keeps the preemption test short.
AuthInfo=cred_expire=${WW_SLURM_CRED_EXPIRE:-5}
StateSaveLocation=$WW_SLURM_DIR/state
SlurmdSpoolDir=$WW_SLURM_DIR/spool
SlurmctldPidFile=$WW_SLURM_DIR/slurmctld.pid
SlurmdPidFile=$WW_SLURM_DIR/slurmd.pid
SlurmctldLogFile=$WW_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$WW_SLURM_DIR/log/slurmd.log
SlurmctldPort=${WW_SLURMCTLD_PORT:-6817}
SlurmdPort=${WW_SLURMD_PORT:-6818}
# linuxproc tracks a step's processes by parent PID (no cgroups needed in a container).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Look at pending jobs every second (default 60 s), so a requeued job starts as soon as its
# hold ends instead of up to a minute later.
SchedulerParameters=sched_interval=1,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
# Keep finished jobs visible to scontrol for 10 min (there is no accounting database).
MinJobAge=600
# Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
KillWait=30
# Advertise the CPUs below even when the hardware has fewer (oversubscription for CI).
SlurmdParameters=config_overrides
NodeName=$NODE CPUs=$WW_SLURM_CPUS State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ ! -e /etc/slurm/slurm.conf || $(readlink /etc/slurm/slurm.conf || true) == "$CONF" ]]; then
        if mkdir -p /etc/slurm 2>/dev/null && ln -sfn "$CONF" /etc/slurm/slurm.conf 2>/dev/null; then :; else
            log "cannot link /etc/slurm/slurm.conf; export SLURM_CONF=$CONF"
        fi
    else
        log "/etc/slurm/slurm.conf belongs to another cluster; export SLURM_CONF=$CONF"
    fi
}

wait_node_idle() {
    for _ in $(seq 100); do
        state=$(SLURM_CONF=$CONF sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
        case $state in idle*|mixed*|allocated*) return 0 ;; esac
        sleep 0.2
    done
    log "node $NODE did not become idle (state: ${state:-none}); see $WW_SLURM_DIR/log/"
    exit 1
}

cmd_start() {
    install_packages
    mkdir -p "$WW_SLURM_DIR"
    start_munge
    if pid_alive "$WW_SLURM_DIR/slurmctld.pid" && pid_alive "$WW_SLURM_DIR/slurmd.pid"; then
        log "already running ($WW_SLURM_DIR)"
        wait_node_idle
        return
    fi
    cmd_stop_slurm
    write_config
    # -i: ignore saved state, so a restart begins with an empty queue.
    slurmctld -f "$CONF" -i
    slurmd -f "$CONF"
    wait_node_idle
    log "up: node $NODE, $WW_SLURM_CPUS CPUs, config $CONF"
}

stop_pidfile() {  # stop_pidfile <pidfile> <name>
    local f=$1 pid
    pid_alive "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$f"
    log "stopped $2 (pid $pid)"
}

cmd_stop_slurm() {
    stop_pidfile "$WW_SLURM_DIR/slurmd.pid" slurmd
    stop_pidfile "$WW_SLURM_DIR/slurmctld.pid" slurmctld
}

cmd_stop() {
    cmd_stop_slurm
    # munged is stopped only when this script started it.
    stop_pidfile "$WW_SLURM_DIR/munged.pid" munged
}

cmd_status() {
    local ok=0
    for d in munged slurmctld slurmd; do
        if pid_alive "$WW_SLURM_DIR/$d.pid"; then echo "$d: running (pid $(cat "$WW_SLURM_DIR/$d.pid"))"
        else echo "$d: stopped"; ok=1; fi
    done
    echo "SLURM_CONF=$CONF"
    if [[ $ok -eq 0 ]]; then SLURM_CONF=$CONF sinfo -N -l || true; fi
    return $ok
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
