#!/usr/bin/env bash
# Thin wrapper: scripts/launch_local_cluster.sh N -- <trainer module> [flags...]
# (see scripts/launch_local_cluster.py for the options).
set -euo pipefail
exec "${PYTHON:-python3}" "$(dirname "$0")/launch_local_cluster.py" "$@"
