#!/usr/bin/env bash
# Runs every test of the workspace. What the tests need from Debian
# (ffmpeg/ffprobe for the live-ingest tests) is installed when missing.
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
if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
fi

# The end-to-end tests (e2e/) start every service binary: build them all first
# (cargo test builds only the binaries of packages that have their own tests).
cargo build --workspace --bins --locked
cargo test --workspace --locked "$@"
