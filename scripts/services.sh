#!/usr/bin/env bash
# The outside systems the tests talk to, installed and run locally.
#   services.sh install   packages the tests need (idempotent)
#   services.sh start     start the services, recording their PIDs
#   services.sh stop      stop what `start` started
#   services.sh env       print the exports that point clients at them
# State lives in $SERVICES_DIR (default: /tmp/runner-test-services).
set -euo pipefail
DIR=${SERVICES_DIR:-/tmp/runner-test-services}
mkdir -p "$DIR"

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install() {
  apt_install git curl ca-certificates docker-compose
}

start() { :; }
stop() { :; }
env_() { :; }

case "${1:-}" in
  install) install ;; start) start ;; stop) stop ;; env) env_ ;;
  *) echo "usage: $0 install|start|stop|env" >&2; exit 2 ;;
esac
