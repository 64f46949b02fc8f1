#!/usr/bin/env bash
# Install the system packages the test suite needs, when missing (Debian/Ubuntu, as root or
# with password-less sudo). Safe to run again.
set -euo pipefail

want=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have mosquitto || want+=(mosquitto)
have socat || want+=(socat)
have mbpoll || want+=(mbpoll)
have openssl || want+=(openssl)
have prometheus || want+=(prometheus)  # scrapes the integrations bridge in its system test
have chromium || want+=(chromium)  # the UI's browser test (Playwright drives Debian's build)
# the fleet's central tier (tests/system/test_fleet.py runs a three-node cluster of its own)
have rabbitmq-server || want+=(rabbitmq-server)
# each test worker's network namespace (tests/netns-python): unshare and ip
have unshare || want+=(util-linux)
have ip || want+=(iproute2)
python3 -c 'import ensurepip, venv' 2>/dev/null || want+=(python3-venv)

if [ ${#want[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "missing system packages: ${want[*]} (install them with: sudo apt-get install -y ${want[*]})" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${want[*]}; this script knows only apt-get" >&2
  exit 1
fi
echo "installing: ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}"
# the Debian package starts a system-wide broker on 1883; the stack starts its own
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  "${sudo[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true
  "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  "${sudo[@]}" systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
elif command -v invoke-rc.d >/dev/null 2>&1; then
  # no systemd (a container): the package may have started its node through init.d
  "${sudo[@]}" invoke-rc.d rabbitmq-server stop >/dev/null 2>&1 || true
fi
