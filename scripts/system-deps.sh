#!/usr/bin/env bash
# Installs the system packages the test bed needs (Debian/Ubuntu, as root), when any is missing.
set -euo pipefail
need=0
for bin in dockerd docker-registry redis-server htpasswd curl docker-compose wrk haproxy chromium; do
  command -v "$bin" >/dev/null 2>&1 || need=1
done
[[ -x /bin/busybox ]] || need=1
/usr/bin/python3 -c "import docker" >/dev/null 2>&1 || need=1 # the Docker SDK for Python (tests/e2e/sdk)
((need)) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "system-deps.sh: the test bed needs docker.io docker-registry busybox-static redis-server apache2-utils python3-docker; run as root to install them" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=l NEEDRESTART_SUSPEND=1
# Keep package postinst scripts from starting system services (a system docker-registry on :5000
# or dockerd would collide with the test bed).
created_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  created_policy=1
fi
apt-get update -qq
apt-get install -y -qq docker.io docker-registry busybox-static redis-server apache2-utils curl ca-certificates \
  iproute2 wrk haproxy docker-compose python3-docker chromium >/dev/null
if ((created_policy)); then rm -f /usr/sbin/policy-rc.d; fi
# dockerd needs cgroups; a bare container may not have them mounted.
if ! grep -qE '^cgroup2? ' /proc/mounts && command -v cgroupfs-mount >/dev/null; then
  cgroupfs-mount
fi
