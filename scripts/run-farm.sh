#!/usr/bin/env bash
# The whole farm on this machine: install, migrate, then web + autoscale + clock from the Procfile
# (`autoscale` runs the Dramatiq workers, one to AUTOSCALE_MAX_WORKERS processes, by queue depth and age).
#   scripts/run-farm.sh            # web on http://127.0.0.1:8000 (PORT=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev/bootstrap.sh

export PORT="${PORT:-8000}"
say "migrating the database"
farmctl db upgrade
say "starting web (http://${WEB_HOST:-127.0.0.1}:$PORT), autoscaled workers and clock — Ctrl-C stops them all"
say "try: curl http://${WEB_HOST:-127.0.0.1}:$PORT/ready  ·  docs: http://${WEB_HOST:-127.0.0.1}:$PORT/schema"
# honcho gives each process its own PORT; pin web's to the one announced above.
exec honcho start -f Procfile web autoscale clock -p "$PORT"
