#!/usr/bin/env bash
# A real single-node Slurm on this machine, for sched's cluster path: bash scripts/slurm-local.sh start|stop|status
#
# start: installs Debian's slurmctld, slurmd, slurm-client and munge when missing (root, apt), makes
# a munge key, writes slurm.conf for this host (its CPUs and memory, two fake GPUs as
# `Gres=gpu:2`, so Slurm sets CUDA_VISIBLE_DEVICES for --gres=gpu:k jobs without a GPU), starts
# munged, slurmctld and slurmd, and waits until the node takes jobs. Idempotent: on a running Slurm
# it does nothing. stop: stops the daemons. status: prints sinfo, exits 0 when the node is up.
set -euo pipefail
CONF_DIR=/etc/slurm
HOST=$(hostname -s)
FAKE_GPUS=(/dev/sched-fake-gpu0 /dev/sched-fake-gpu1)

node_up() { sinfo -h -N -o "%t" 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
    && command -v munged >/dev/null && return
  echo "slurm-local: installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

munge_up() {
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
  fi
}

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MB, less 1 GB for the system
  mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  for dev in "${FAKE_GPUS[@]}"; do [ -e "$dev" ] || mknod "$dev" c 1 3; done
  cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=sched-local
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
GresTypes=gpu
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=60
KillWait=5
NodeName=$HOST CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  printf 'NodeName=%s Name=gpu File=%s\nNodeName=%s Name=gpu File=%s\n' \
    "$HOST" "${FAKE_GPUS[0]}" "$HOST" "${FAKE_GPUS[1]}" > "$CONF_DIR/gres.conf"
}

start() {
  if node_up; then echo "slurm-local: already running"; return; fi
  install
  munge_up
  write_conf
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 1 60); do
    if node_up; then echo "slurm-local: node $HOST up"; sinfo; return; fi
    scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "slurm-local: the node did not come up; see /var/log/slurm/" >&2
  tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
  exit 1
}

stop() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
  echo "slurm-local: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo && node_up ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
