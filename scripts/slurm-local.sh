#!/usr/bin/env bash
# A real Slurm cluster on this one machine (run as root; `make slurm-check`): installs Debian's slurm-wlm
# and munge if they are missing, starts munged, slurmctld and slurmd on 127.0.0.1 without systemd
# (proctrack/linuxproc, task/none, a configuration in a temporary folder: /etc is left alone; every
# address in it is 127.0.0.1, so the daemons talk over loopback only), submits
# the README's job-array line over a folder of clips, waits, and checks that every file was encoded
# exactly once (one output each, readable, and one "encoded" count per file over all the array's
# tasks). Everything it started is stopped on exit, whatever happens.
#
#   scripts/slurm-local.sh [N_FILES] [N_TASKS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
N_FILES=${1:-12}
N_TASKS=${2:-4}
[ "$(id -u)" = 0 ] || { echo "slurm-local.sh: run as root (it starts munged, slurmctld and slurmd)" >&2; exit 2; }
[ -x .venv/bin/dacli ] || { echo "slurm-local.sh: run 'make install' first" >&2; exit 2; }
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurm-wlm munge
fi

WORK=$(mktemp -d /tmp/dacli-slurm.XXXXXX)
PIDS=()
cleanup() {
  [ -n "${JOB:-}" ] && scancel "$JOB" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$WORK"/slurmctld.pid "$WORK"/slurmd.pid "$WORK"/munge/munged.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 1
  if [ -n "${DACLI_SLURM_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT INT TERM

# munge: its own key and socket in $WORK, run as the munge user
mkdir -p "$WORK/munge"
cp /etc/munge/munge.key "$WORK/munge/munge.key" 2>/dev/null || dd if=/dev/urandom of="$WORK/munge/munge.key" bs=1024 count=1 status=none
chown -R munge: "$WORK/munge" && chmod 711 "$WORK/munge" && chmod 400 "$WORK/munge/munge.key"
chmod 755 "$WORK"
runuser -u munge -- /usr/sbin/munged --key-file="$WORK/munge/munge.key" --socket="$WORK/munge/munge.socket" \
  --pid-file="$WORK/munge/munged.pid" --log-file="$WORK/munge/munged.log" --seed-file="$WORK/munge/munged.seed"

NODE=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$WORK/ctld" "$WORK/d" "$WORK/logs"
cat > "$WORK/slurm.conf" <<EOF
ClusterName=dacli
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$WORK/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$WORK/ctld
SlurmdSpoolDir=$WORK/d
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/logs/slurmctld.log
SlurmdLogFile=$WORK/logs/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$WORK/slurm.conf"
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do sinfo -h -o %T 2>/dev/null | grep -q idle && break; sleep 1; done
sinfo -h -o "%N %T %c" | grep -q idle || { echo "slurm-local.sh: the node never came up" >&2; cat "$WORK"/logs/*.log >&2; exit 1; }

# a folder of clips (1-6 s, some stereo, some at other rates; two share a stem, so their outputs keep
# their extension), then the README's line as the array's job script
mkdir -p "$WORK/audio/sub"
.venv/bin/python - "$WORK/audio" "$N_FILES" <<'EOF'
import sys, numpy as np, soundfile as sf
from pathlib import Path
out, n = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    rate = (44100, 48000, 22050)[i % 3]
    x = 0.2 * rng.standard_normal((int(rate * (1 + i % 6)), 1 + i % 2))
    sf.write(out / ("sub" if i % 4 == 0 else "") / f"clip{i:03d}.{'flac' if i % 5 else 'wav'}", x, rate)
sf.write(out / "clip001.wav", 0.1 * rng.standard_normal(44100), 44100)  # same stem as clip001.flac
EOF
cat > "$WORK/job.sh" <<EOF
#!/bin/bash
#SBATCH --array=0-$((N_TASKS - 1))
#SBATCH --cpus-per-task=1
#SBATCH --output=$WORK/logs/task-%a.log
export PATH="$ROOT/.venv/bin:\$PATH"
cd "$WORK"
# README:
dacli encode audio/ -o tokens/ --kbps 6 --precision fp32 --shard \$((SLURM_ARRAY_TASK_ID+1))/\$SLURM_ARRAY_TASK_COUNT
EOF
JOB=$(sbatch --parsable "$WORK/job.sh")
echo "submitted array job $JOB ($N_TASKS tasks) over $(find "$WORK/audio" -type f | wc -l) files"
for _ in $(seq 600); do [ -z "$(squeue -h -j "$JOB" 2>/dev/null)" ] && break; sleep 1; done
[ -z "$(squeue -h -j "$JOB" 2>/dev/null)" ] || { echo "slurm-local.sh: the job did not finish in 10 minutes" >&2; exit 1; }

# every input encoded exactly once: one readable output per input, and per task a run that encoded its
# share (an empty share exits 1 with "no input files", which is not a failure of the encoding)
.venv/bin/python - "$WORK" "$N_TASKS" <<'EOF'
import sys, re
from pathlib import Path
import dacli
from dacli.batch import AUDIO_IN, DAC_EXTS, destinations
from dacli.fileio import find_inputs, shard
work, n = Path(sys.argv[1]), int(sys.argv[2])
items = find_inputs([work / "audio"], AUDIO_IN)
expected = {dst.relative_to(work / "tokens") for _, dst in destinations(items, work / "tokens", ".dac", DAC_EXTS)}
got = {p.relative_to(work / "tokens") for p in (work / "tokens").rglob("*.dac")}
assert got == expected, (sorted(got ^ expected))
for p in got:
    dacli.read_codes(work / "tokens" / p)  # complete, every CRC checked
counted = 0
for k in range(n):
    log = (work / "logs" / f"task-{k}.log").read_text()
    share = len(shard(items, f"{k + 1}/{n}"))
    m = re.search(r"encoded (\d+) file\(s\), skipped (\d+), failed (\d+)", log)
    done = int(m.group(1)) if m else (1 if share == 1 and "error" not in log else 0)  # one file: no summary
    assert done == share and (m is None or m.group(3) == "0"), (k, share, log)
    counted += done
assert counted == len(items), (counted, len(items))
print(f"slurm-local.sh: ok: {len(items)} files, {n} array tasks, each file encoded exactly once")
EOF

# Ray on Slurm: one Ray cluster in the allocation (scripts/ray-on-slurm.sbatch, as on GPU nodes), the
# same folder through `dacli encode --engine ray`: the same outputs, byte for byte, and a report of
# every file "ok"
RAYJOB=$(PATH="$ROOT/.venv/bin:$PATH" sbatch --parsable --nodes=1 --cpus-per-task="$CPUS" \
         --output="$WORK/logs/ray.log" scripts/ray-on-slurm.sbatch "$WORK/audio" "$WORK/tokens-ray" --workers 2)
JOB=$RAYJOB
echo "submitted Ray-on-Slurm job $RAYJOB"
for _ in $(seq 600); do [ -z "$(squeue -h -j "$RAYJOB" 2>/dev/null)" ] && break; sleep 1; done
[ -z "$(squeue -h -j "$RAYJOB" 2>/dev/null)" ] || { echo "slurm-local.sh: the Ray job did not finish in 10 minutes" >&2; exit 1; }
.venv/bin/python - "$WORK" <<'EOF'
import sys
from pathlib import Path
work = Path(sys.argv[1])
a = {p.relative_to(work / "tokens"): p.read_bytes() for p in (work / "tokens").rglob("*.dac")}
b = {p.relative_to(work / "tokens-ray"): p.read_bytes() for p in (work / "tokens-ray").rglob("*.dac")}
assert a.keys() == b.keys(), (work / "logs" / "ray.log").read_text()[-3000:]
assert all(a[k] == b[k] for k in a), [str(k) for k in a if a[k] != b[k]]
report, = (work / "tokens-ray").glob("dacli-report-*.tsv")
rows = [ln.split("\t") for ln in report.read_text().splitlines()[2:]]
assert len(rows) == len(a) and {r[2] for r in rows} == {"ok"}, (work / "logs" / "ray.log").read_text()
print(f"slurm-local.sh: ok: Ray on Slurm encoded the same {len(a)} files, byte for byte")
EOF
