#!/usr/bin/env bash
# Independent readers for the end-to-end realism tests (tests/tests/volatility.rs):
#   .venv/bin/vol       Volatility 3 (windows.info, windows.pslist, windows.modules)
#   kdmp_parser         the Python bindings of the C++ kdmp-parser
#   pefile              PE parsing (tests/tests/pe_unwind.rs checks the fixture images' directories)
#   .venv/bin/ntoseye   the ntoseye debugger, a prebuilt Rust binary in its wheel (tests/tests/ntoseye.rs,
#                       and a KDCOM host against our debuggee emulator)
#   pykdclient          a pure-Python KDCOM host (framing and handshake) against the emulator
# Creates <repo>/.venv with pinned versions; quiet and quick when they are already there.
# Usage: bash .ci/venv.sh
set -euo pipefail

VOLATILITY3_VERSION=2.28.2
KDMP_PARSER_VERSION=0.7.4
PEFILE_VERSION=2024.8.26
NTOSEYE_VERSION=0.52.0
PYKDCLIENT_VERSION=0.1.1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/.venv"
python="${PYTHON:-python3}"

installed() {
    # Exit 0 when `$1==$2` is installed in the venv.
    [ -x "$venv/bin/python" ] || return 1
    "$venv/bin/python" - "$1" "$2" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
EOF
}

if installed volatility3 "$VOLATILITY3_VERSION" && installed kdmp-parser "$KDMP_PARSER_VERSION" \
    && installed pefile "$PEFILE_VERSION" && installed ntoseye "$NTOSEYE_VERSION" \
    && installed pykdclient "$PYKDCLIENT_VERSION" \
    && [ -x "$venv/bin/vol" ] && [ -x "$venv/bin/ntoseye" ]; then
    exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "volatility3==$VOLATILITY3_VERSION" "kdmp-parser==$KDMP_PARSER_VERSION" "pefile==$PEFILE_VERSION" \
    "ntoseye==$NTOSEYE_VERSION" "pykdclient==$PYKDCLIENT_VERSION"
"$venv/bin/vol" --help >/dev/null
"$venv/bin/python" -c 'import kdmp_parser, pefile, pykdclient' >/dev/null
"$venv/bin/ntoseye" --version >/dev/null
echo "venv ready: $venv (volatility3 $VOLATILITY3_VERSION, kdmp-parser $KDMP_PARSER_VERSION, pefile $PEFILE_VERSION, ntoseye $NTOSEYE_VERSION, pykdclient $PYKDCLIENT_VERSION)"
