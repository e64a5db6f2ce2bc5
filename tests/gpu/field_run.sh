#!/bin/bash
# The energy field probe (energy_field_probe.py) idle, then beside a busy PyTorch load.
source "$(dirname "$0")/agent_env.sh"
python3 $REPO/tests/gpu/energy_field_probe.py idle
python3 $REPO/tests/gpu/torch_load.py load 25 8192 1.0 - /tmp/loads.jsonl &
for _ in $(seq 300); do grep -q busy_start /tmp/loads.jsonl 2>/dev/null && break; sleep 0.1; done
sleep 1
python3 $REPO/tests/gpu/energy_field_probe.py busy
kill %1
