#!/usr/bin/env bash
# Install Slurm (+ munge, slurmdbd, MariaDB) from Debian packages, and iproute2 and util-linux for
# the test cluster's second node (a network namespace).
# Idempotent: exits at once if the binaries are already there. Needs root (or sudo).
# Used by .ci/run before pytest; tests/slurm_cluster.py starts the daemons itself.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

if have slurmctld && have slurmd && have slurmdbd && have sacct && have munged \
   && { have mariadbd || have mysqld; } && have mariadb-install-db \
   && have ip && have nsenter && have unshare; then
    echo "install-slurm: Slurm already installed (slurm $(dpkg-query -W -f='${Version}' slurmctld 2>/dev/null))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive
# No systemd in CI: keep maintainer scripts from trying to start services.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    munge slurm-client slurmctld slurmd slurmdbd mariadb-server iproute2 util-linux
echo "install-slurm: installed slurm $(dpkg-query -W -f='${Version}' slurmctld)"
