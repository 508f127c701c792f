#!/usr/bin/env bash
# Debian's headless Chromium for the browser test of `mtfap serve` (tests/test_web_browser.py).
# Never `playwright install`: that downloads a browser build; the test drives /usr/bin/chromium.
# Does nothing when Chromium is there; without apt-get or root it says so and succeeds, and the
# browser test then skips with its reason.
set -uo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: no apt-get here; the browser test will skip" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "install_chromium: not root; run 'apt-get install -y chromium' as root for the" \
             "browser test (it skips meanwhile)" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium; } \
        >/tmp/install_chromium.log 2>&1; then
    echo "install_chromium: apt-get failed (see /tmp/install_chromium.log); the browser test" \
         "will skip" >&2
fi
exit 0
