#!/usr/bin/env bash
# Migrate every service for every tenant (or only the services named as arguments).
# TENANTS="default toshiba" limits the tenants; fleet reads it from the environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec fleet migrate "$@"
