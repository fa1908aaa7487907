#!/usr/bin/env bash
# Stop what deploy/start-services.sh started, in the reverse order; what is not running is
# skipped. Packages, configs, passwords and data stay: start-services.sh brings it all back.
set -uo pipefail

say() { printf '[stop-services] %s\n' "$*"; }

# stop NAME PIDFILE: end the daemon whose pid PIDFILE holds, and wait up to 30 s for it to go.
stop() {
    local pid
    pid=$(cat "$2" 2>/dev/null) && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 0
    kill "$pid"
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || { say "$1 stopped"; return 0; }
        sleep 1
    done
    say "$1 still running after 30 s"
}

[ "$(id -u)" = 0 ] || { say "run as root"; exit 1; }
stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
stop slurmdbd /run/slurmdbd.pid
if command -v mariadb-admin >/dev/null && mariadb-admin --silent ping >/dev/null 2>&1; then
    /etc/init.d/mariadb stop >/dev/null && say "MariaDB stopped"
fi
stop munged /run/munge/munged.pid
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r version cluster; do
        pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" stop && say "PostgreSQL stopped"
    done
fi
