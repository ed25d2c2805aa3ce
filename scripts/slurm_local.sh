#!/usr/bin/env bash
# A one-node SLURM cluster on loopback for tests/e2e/test_slurm.py (Debian's slurm-wlm + munge, `make slurm`):
#   scripts/slurm_local.sh start <dir>   writes <dir>/slurm.conf, starts munged, slurmctld and slurmd, waits
#                                        until the node is idle
#   scripts/slurm_local.sh stop <dir>    stops the three daemons by the pids they wrote under <dir>
# Clients (sinfo, sbatch, and submitit through them) need SLURM_CONF=<dir>/slurm.conf. Everything lives under
# <dir>: config, munge key and socket, state, spool, logs, pid files; nothing in /etc or /var is touched.
# Keep <dir> short (a unix socket path must fit in 108 bytes) and mode 0700 (munged refuses a socket directory
# others may write to). Needs root: slurmd starts job steps as the submitting user.
# Env: SLURMCTLD_PORT (default 6817), SLURMD_PORT (6818), SLURM_NODE_CPUS (2), SLURM_NODE_MEMORY_MB (4096),
# SLURM_NODE_FEATURES (qrun_local: what `--constraint` can ask for), SLURM_WAIT_S (60).
set -euo pipefail
cmd=${1:?usage: slurm_local.sh start|stop <dir>}
dir=$(realpath -m "${2:?usage: slurm_local.sh start|stop <dir>}")
wait_s=${SLURM_WAIT_S:-60}
lib=/usr/lib/x86_64-linux-gnu/slurm-wlm

stop_pid() {  # stop_pid FILE: TERM the pid in FILE, KILL it after 10 s
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  kill "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$file"
}

case $cmd in
start)
  for exe in munged slurmctld slurmd sinfo sbatch; do
    command -v "$exe" >/dev/null || [ -x "/usr/sbin/$exe" ] || { echo "no $exe: make slurm" >&2; exit 1; }
  done
  mkdir -p "$dir"/{state,spool,log}
  chmod 0700 "$dir"
  # munge: its own key, socket and files, so this cluster neither needs nor disturbs a system munged
  [ -s "$dir/munge.key" ] || dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
  chmod 0600 "$dir/munge.key"
  # --force: munged refuses to run as root, and to use a socket under a world-writable /tmp, without it
  /usr/sbin/munged --force --socket="$dir/munge.socket" --key-file="$dir/munge.key" \
    --pid-file="$dir/munged.pid" --seed-file="$dir/munged.seed" --log-file="$dir/log/munged.log"
  cat >"$dir/slurm.conf" <<EOF
ClusterName=qrunlocal
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# a container has no cgroup hierarchy to give slurm: processes are tracked through /proc, tasks are not bound
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# the node is what this file says, whatever the machine has (fewer cores must not drain it)
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
# completed jobs stay in `scontrol show job` for 15 min: the test reads them back after the sweep
MinJobAge=900
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=${SLURM_NODE_CPUS:-2} RealMemory=${SLURM_NODE_MEMORY_MB:-4096} Features=${SLURM_NODE_FEATURES:-qrun_local} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -c -f "$SLURM_CONF"
  /usr/sbin/slurmd -N localhost -f "$SLURM_CONF"
  for _ in $(seq $((wait_s * 2))); do
    state=$(sinfo -h -n localhost -o %t 2>/dev/null || true)
    [ "$state" = idle ] && { echo "slurm up: SLURM_CONF=$SLURM_CONF"; exit 0; }
    sleep 0.5
  done
  echo "the node is not idle after $wait_s s (sinfo: '${state:-}'); logs under $dir/log:" >&2
  tail -n 20 "$dir"/log/*.log >&2 || true
  exit 1
  ;;
stop)
  # this cluster's jobs first (a test that timed out leaves them running), so no job step outlives slurmd
  if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF="$dir/slurm.conf" timeout 10 scancel --full --partition=debug 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(SLURM_CONF="$dir/slurm.conf" timeout 5 squeue -h 2>/dev/null || true)" ] && break
      sleep 0.2
    done
  fi
  stop_pid "$dir/slurmd.pid"
  stop_pid "$dir/slurmctld.pid"
  stop_pid "$dir/munged.pid"
  ;;
*)
  echo "usage: slurm_local.sh start|stop <dir>" >&2
  exit 2
  ;;
esac
