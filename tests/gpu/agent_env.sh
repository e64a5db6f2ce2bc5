# Sourced by the GPU scripts: OUT checked, REPO found, a `wattwise` command that runs this
# checkout, and the agent's ledger, work socket and /metrics under /tmp/ww.
set -u
OUT=${OUT:?set OUT to a folder}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=/tmp/ww && mkdir -p $W/bin
# wattwise is one import package made of agent/ and exporters/ (pyproject.toml's package-dir):
# laid out here as the wheel lays it out, with no build step.
rm -rf $W/py && mkdir -p $W/py && cp -r $REPO/agent $W/py/wattwise && cp -r $REPO/exporters $W/py/wattwise/
export PYTHONPATH=$W/py:${PYTHONPATH:-} PYTHONUNBUFFERED=1
printf '#!/bin/sh\nexec python3 -m wattwise "$@"\n' >$W/bin/wattwise
chmod +x $W/bin/wattwise && export PATH=$W/bin:$PATH
export WATTWISE_LEDGER__PATH=$W/ledger.db WATTWISE_WORK__SOCKET_PATH=$W/ww.sock
export WATTWISE_LISTEN=127.0.0.1:9877 WATTWISE_INTERVAL_S=1
