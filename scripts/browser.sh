# Headless Chromium for the browser tests (crates/moescope-cli/tests/browser_*.rs) and the
# screenshots (scripts/screenshots.sh). Source it from bash:
#
#   source scripts/browser.sh
#
# Finds Chromium (MOESCOPE_CHROMIUM, else chromium, chromium-browser, google-chrome or
# google-chrome-stable on PATH); when none is there, installs Debian's `chromium` package with
# apt-get (as root, or through `sudo -n`). Idempotent: nothing is installed when Chromium is
# already there. Exports MOESCOPE_CHROMIUM (the binary) and MOESCOPE_REQUIRE_CHROMIUM=1 (the
# browser tests then fail instead of skipping when Chromium cannot run).

moescope_find_chromium() {
  if [ -n "${MOESCOPE_CHROMIUM:-}" ] && [ -x "${MOESCOPE_CHROMIUM}" ]; then
    echo "${MOESCOPE_CHROMIUM}"
    return 0
  fi
  local name
  for name in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
      command -v "$name"
      return 0
    fi
  done
  return 1
}

if ! MOESCOPE_CHROMIUM="$(moescope_find_chromium)"; then
  echo "== installing chromium (Debian package: chromium) for the browser tests"
  _moescope_sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then _moescope_sudo="sudo -n"; else
      echo "error: chromium missing, not root and no sudo: install the Debian package 'chromium'" >&2
      return 1 2>/dev/null || exit 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: chromium missing and no apt-get: install Chromium and set MOESCOPE_CHROMIUM" >&2
    return 1 2>/dev/null || exit 1
  fi
  DEBIAN_FRONTEND=noninteractive $_moescope_sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $_moescope_sudo apt-get install -y -q --no-install-recommends chromium >/dev/null
  unset _moescope_sudo
  if ! MOESCOPE_CHROMIUM="$(moescope_find_chromium)"; then
    echo "error: installing the Debian package 'chromium' did not provide a chromium binary" >&2
    return 1 2>/dev/null || exit 1
  fi
fi
export MOESCOPE_CHROMIUM
# The Rust tests that need it fail (instead of skipping) when it is missing.
export MOESCOPE_REQUIRE_CHROMIUM=1
echo "== chromium: $MOESCOPE_CHROMIUM ($("$MOESCOPE_CHROMIUM" --version 2>/dev/null | head -1))"
