#!/usr/bin/env bash
# Install the headless browser the report tests drive: Debian's Chromium (never Playwright's own
# download, which would fetch from a CDN) and the Playwright Python client that talks to it.
# Idempotent: does nothing that is already done, so CI can call it on every run.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ! -x /usr/bin/chromium ]; then
    $SUDO apt-get update
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver
fi

# The tests launch /usr/bin/chromium through executable_path; `playwright install` is not needed.
if ! python -c "import playwright" 2>/dev/null; then
    python -m pip install --quiet playwright
fi

/usr/bin/chromium --version
python -c "import playwright; print('playwright', __import__('importlib.metadata').metadata.version('playwright'))"
