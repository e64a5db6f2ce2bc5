#!/bin/bash
# Hardware validation on a lent GPU machine (see docs/hardware-validation.md). Runs the agent
# against the real NVML under two PyTorch loads started with `wattwise exec`, records what the
# driver answered, and writes everything under $OUT:
#   info.txt (machine, probe, once, tests/gpu, NVML call costs, non-root access, jobs, report),
#   trace.jsonl (NVML at 10 Hz), loads.jsonl, metrics.txt, agent.log
# Never changes MIG mode, clocks or power limits.
source "$(dirname "$0")/agent_env.sh"
I=$OUT/info.txt
section() { printf '\n===== %s =====\n' "$*" >>$I; }
run() { section "$*"; timeout 120 "$@" >>$I 2>&1; echo "[exit $?]" >>$I; }

section machine; { date -u; uname -a; nproc; cat /proc/cpuinfo | grep -m1 'model name';
  python3 -c 'import pynvml,torch,sys; print(sys.version); print("torch", torch.__version__)';
  python3 -m pip show nvidia-ml-py 2>/dev/null | head -2; ps -p 1 -o comm=;
  mount | grep -E 'cgroup|powercap'; cat /proc/self/cgroup; ls /sys/class/powercap 2>&1;
  for h in /sys/class/hwmon/*; do echo "$h $(cat $h/name 2>&1)"; ls $h | grep -E 'power|energy'; done
  ls -la /dev/nvidia* ; } >>$I 2>&1
run nvidia-smi
run nvidia-smi -q -d POWER
run nvidia-smi --query-gpu=name,uuid,driver_version,mig.mode.current,power.draw,power.limit,power.draw.average,power.draw.instant,enforced.power.limit --format=csv
run wattwise probe
run wattwise once --interval 2
run python3 -m pytest -q -p no:cacheprovider tests/gpu

# The agent and a 10 Hz recorder; then load B alone, A beside it, A alone. Each load logs its
# rate every second: its rate beside the other over its rate alone is the GPU time it got.
cpu_ticks() { awk '{print $14 + $15}' /proc/$1/stat; }   # utime + stime, 1/100 s
python3 $REPO/tests/gpu/record_nvml.py $OUT/trace.jsonl 95 10 2>>$I &
REC=$!
wattwise run >$OUT/agent.log 2>&1 &
AGENT=$!
for _ in $(seq 50); do wattwise health >/dev/null 2>&1 && break; sleep 0.2; done
section "agent up at $(date -u +%T)"
c0=$(cpu_ticks $AGENT); sleep 8; c1=$(cpu_ticks $AGENT)
echo "agent CPU, idle GPU, no jobs: $(( (c1 - c0) * 10 / 8 )) ms/s" >>$I
section "NVML call costs, idle GPU"; python3 $REPO/tests/gpu/record_nvml.py --call-costs >>$I 2>&1
busy() { for _ in $(seq 300); do grep -q "\"$1\", \"pid\": [0-9]*, \"event\": \"busy_start" $OUT/loads.jsonl 2>/dev/null && return; sleep 0.1; done; }
wattwise exec --job-name infer-b -- python3 $REPO/tests/gpu/torch_load.py infer-b 32 4096 1.0 tokens $OUT/loads.jsonl >>$I 2>&1 &
B=$!
busy infer-b; sleep 8
wattwise exec --job-name train-a -- python3 $REPO/tests/gpu/torch_load.py train-a 36 8192 1.0 samples $OUT/loads.jsonl >>$I 2>&1 &
A=$!
busy train-a; sleep 2
section "/proc/<load>/cgroup while both run"; for p in $(pgrep -f torch_load.py); do echo "$p: $(cat /proc/$p/cgroup | tr '\n' ' ')"; done >>$I 2>&1
c0=$(cpu_ticks $AGENT); sleep 8; c1=$(cpu_ticks $AGENT)
echo "agent CPU, both loads: $(( (c1 - c0) * 10 / 8 )) ms/s" >>$I
section "NVML call costs while both run"; python3 $REPO/tests/gpu/record_nvml.py --call-costs >>$I 2>&1
section "NVML as uid 65534 while a root job runs"
setpriv --reuid=65534 --regid=65534 --clear-groups python3 -c '
import pynvml as n
n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0)
for f, a in [("nvmlDeviceGetTotalEnergyConsumption", ()), ("nvmlDeviceGetComputeRunningProcesses", ()), ("nvmlDeviceGetProcessUtilization", (0,))]:
    try: r = getattr(n, f)(h, *a); print(f, "->", r if not isinstance(r, list) else [getattr(x, "pid", x) for x in r])
    except Exception as e: print(f, "->", type(e).__name__, e)
' >>$I 2>&1
wait $A $B
section "loads done at $(date -u +%T)"
sleep 8
python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9877/metrics').read().decode())" >$OUT/metrics.txt 2>>$I
kill -TERM $AGENT; wait $AGENT; echo "agent exit $?" >>$I
wait $REC
run wattwise jobs --all
run wattwise jobs --all --json
run wattwise report --since 1h
run wattwise report --since 1h --sci
ls -la $OUT >>$I
