#!/usr/bin/env bash
# The whole farm on this machine: install, migrate, then web + worker + clock from the Procfile.
#   scripts/run-farm.sh            # web on http://127.0.0.1:8000 (PORT=... to change)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/dev/bootstrap.sh

export PORT="${PORT:-8000}"
say "migrating the database"
farmctl db upgrade
say "starting web (http://${WEB_HOST:-127.0.0.1}:$PORT), worker and clock — Ctrl-C stops them all"
say "try: curl http://${WEB_HOST:-127.0.0.1}:$PORT/ready  ·  docs: http://${WEB_HOST:-127.0.0.1}:$PORT/schema"
# honcho gives each process its own PORT; pin web's to the one announced above.
exec honcho start -f Procfile web worker clock -p "$PORT"
