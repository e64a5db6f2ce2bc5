# Sourced by the GPU scripts: OUT checked, REPO found, a `wattwise` command that runs this
# checkout, and the agent's ledger, work socket and /metrics under /tmp/ww.
set -u
OUT=${OUT:?set OUT to a folder}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
W=/tmp/ww && mkdir -p $W/bin
export PYTHONPATH=$REPO:${PYTHONPATH:-} PYTHONUNBUFFERED=1
printf '#!/bin/sh\nexec python3 -c "import sys; sys.argv[0]=\\"wattwise\\"; from agent.cli import main; main()" "$@"\n' >$W/bin/wattwise
chmod +x $W/bin/wattwise && export PATH=$W/bin:$PATH
export WATTWISE_LEDGER__PATH=$W/ledger.db WATTWISE_WORK__SOCKET_PATH=$W/ww.sock
export WATTWISE_LISTEN=127.0.0.1:9877 WATTWISE_INTERVAL_S=1
