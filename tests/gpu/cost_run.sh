#!/bin/bash
# Where the agent's CPU goes on a real GPU: NVML call costs (wall and CPU) idle and under load,
# and the agent's CPU per thread idle, beside a busy GPU process, and with a job reporting work
# ten times a second. Writes $OUT/costs.txt. Never changes MIG mode, clocks or power limits.
source "$(dirname "$0")/agent_env.sh"
C=$OUT/costs.txt
threads() { for t in /proc/$AGENT/task/*; do echo "${t##*/} $(awk '{print $14 + $15}' $t/stat)"; done; }
window() {  # agent CPU per thread over $2 seconds, ms/s
  local before; before=$(threads); sleep $2
  echo "== agent CPU, $1 (ms/s per thread, total)" >>$C
  join <(echo "$before" | sort) <(threads | sort) | awk -v s=$2 \
    '{d = ($3 - $2) * 10 / s; t += d; if (d > 0) printf "  thread %s: %.1f\n", $1, d} END {printf "  total: %.1f\n", t}' >>$C
}
busy() { for _ in $(seq 300); do grep -q "\"$1\", \"pid\": [0-9]*, \"event\": \"busy_start" $W/loads.jsonl 2>/dev/null && return; sleep 0.1; done; }
wattwise run >$OUT/agent.log 2>&1 &
AGENT=$!
for _ in $(seq 50); do wattwise health >/dev/null 2>&1 && break; sleep 0.2; done
sleep 2; window "idle GPU, no jobs" 8
echo "== NVML calls, idle GPU" >>$C; python3 $REPO/tests/gpu/record_nvml.py --call-costs >>$C 2>&1
wattwise exec --job-name train-a -- python3 $REPO/tests/gpu/torch_load.py train-a 40 8192 1.0 - $W/loads.jsonl >>$C 2>&1 &
A=$!
busy train-a; sleep 1; window "one busy job, no work reports" 8
echo "== NVML calls, GPU busy" >>$C; python3 $REPO/tests/gpu/record_nvml.py --call-costs >>$C 2>&1
wattwise exec --job-name infer-b -- python3 $REPO/tests/gpu/torch_load.py infer-b 14 4096 1.0 tokens $W/loads.jsonl >>$C 2>&1 &
B=$!
busy infer-b; sleep 1; window "two busy jobs, one reporting work 10 times a second" 8
wait $B
python3 -c "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9877/metrics').read().decode())" | grep -E "^wattwise_(tick_duration|work_units)" >>$C
kill $A 2>/dev/null; kill -TERM $AGENT; wait $AGENT
cat $W/loads.jsonl | grep -v mark >>$C
