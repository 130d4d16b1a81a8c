#!/usr/bin/env bash
# Show, per service and tenant, the current revision and what is pending.
# TENANTS="default toshiba" limits the tenants; fleet reads it from the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec fleet status "$@"
