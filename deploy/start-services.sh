#!/usr/bin/env bash
# Start, on this one machine, the servers that genre-exp's scale-out paths use, as CI does before
# the tests (run as root; no systemd needed):
#   - PostgreSQL, the team tracking server's store, with a login role for TCP clients;
#   - a one-node SLURM cluster with accounting: munge (authentication), MariaDB and slurmdbd
#     (job accounting, what `sacct` reads), slurmctld (the controller) and slurmd (the node).
# What is missing is installed from Debian's packages. Running it again is harmless: what runs
# is left running (a daemon whose rendered config changed is restarted), what is missing is
# started. Passwords are generated once and kept in /etc/genre-exp/ (root only); the tests read
# the PostgreSQL role's URL from /etc/genre-exp/postgres.url. deploy/stop-services.sh stops it all.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=/etc/genre-exp
host=$(hostname -s)
began=$EPOCHREALTIME

say() { printf '[start-services] %s\n' "$*"; }
die() { say "error: $*" >&2; exit 1; }
# since START: seconds elapsed since START (an $EPOCHREALTIME), to one decimal.
since() {
    local tenths=$(((${EPOCHREALTIME/./} - ${1/./}) / 100000))
    printf '%d.%d s' $((tenths / 10)) $((tenths % 10))
}

# wait_for SECONDS WHAT COMMAND...: retry COMMAND every second until it succeeds.
wait_for() {
    local limit=$1 what=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what: not ready after $limit s"
        sleep 1
    done
}

# secret FILE: a random password, generated on the first run and kept for the next ones.
secret() {
    if [ ! -s "$1" ]; then
        (umask 077 && head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 >"$1")
    fi
    cat "$1"
}

# render TEMPLATE TARGET MODE DAEMON...: fill in a template from deploy/slurm/; where TARGET
# changes, the DAEMONs reading it are stopped first (and started again below), so that a run that
# stops half-way leaves no daemon on a config other than its file's. A file there that this
# script did not write is someone's real cluster: left alone.
render() {
    local template=$1 target=$2 mode=$3 rendered daemon
    shift 3
    if [ -e "$target" ] && ! grep -q 'deploy/start-services.sh' "$target"; then
        die "$target exists and was not written by this script; not overwriting it"
    fi
    rendered=$(mktemp)
    sed -e "s/@HOST@/$host/g" -e "s/@CPUS@/$cpus/g" -e "s/@MEMORY_MB@/$memory_mb/g" \
        -e "s/@STORAGE_PASS@/$slurmdb_password/g" "$template" >"$rendered"
    if ! cmp -s "$rendered" "$target"; then
        for daemon; do stop_daemon "$daemon"; done
        install -m "$mode" "$rendered" "$target"
    fi
    rm -f "$rendered"
}

# running NAME: the daemon NAME runs, by the pid file its config names (/run/NAME.pid); a pid
# file left by a killed daemon may hold a pid that another process has since been given.
running() {
    local pid
    pid=$(cat "/run/$1.pid" 2>/dev/null) && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

# stop_daemon NAME: end a daemon and wait until it is gone (to restart it on a new config).
stop_daemon() {
    running "$1" || return 0
    kill "$(cat "/run/$1.pid")"
    wait_for 30 "$1 to stop" bash -c "$(declare -f running); ! running $1"
}

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts system daemons)"

# --- Packages ---------------------------------------------------------------------------------
t=$EPOCHREALTIME
missing=()
command -v pg_ctlcluster >/dev/null || missing+=(postgresql)
command -v munged >/dev/null || missing+=(munge)
command -v mariadbd >/dev/null || missing+=(mariadb-server)
command -v slurmdbd >/dev/null || missing+=(slurmdbd)
command -v slurmctld >/dev/null || missing+=(slurmctld)
command -v slurmd >/dev/null || missing+=(slurmd)
command -v sinfo >/dev/null || missing+=(slurm-client)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq
    # slurm-wlm is slurmctld + slurmd + slurm-client; its recommended extras (plugins for
    # HDF5, InfluxDB, ...) are not needed.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
say "packages: $(since "$t")"
install -d -m 700 "$state"

# --- PostgreSQL -------------------------------------------------------------------------------
t=$EPOCHREALTIME
pg_version=$(ls /etc/postgresql | sort -V | tail -n 1)
[ -n "$pg_version" ] || die "no PostgreSQL cluster in /etc/postgresql"
pg_cluster() { pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main"'; }
[ -n "$(pg_cluster)" ] || die "no cluster $pg_version/main (pg_createcluster $pg_version main)"
if ! pg_cluster | grep -q online; then
    pg_ctlcluster --skip-systemctl-redirect "$pg_version" main start
fi
pg_port=$(pg_cluster | awk '{print $3}')
wait_for 60 "PostgreSQL on 127.0.0.1:$pg_port" pg_isready -q -h 127.0.0.1 -p "$pg_port"
pg_password=$(secret "$state/postgres.password")
# Local sockets use peer authentication (psql as the postgres user); TCP clients log in with a
# password. The role creates a database and a role per test session, so it needs no superuser.
runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -p "$pg_port" <<SQL
\set password '$pg_password'
SELECT 'CREATE ROLE genre_exp' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'genre_exp')\gexec
ALTER ROLE genre_exp WITH LOGIN CREATEDB CREATEROLE PASSWORD :'password';
SQL
(umask 077 && echo "postgresql://genre_exp:$pg_password@127.0.0.1:$pg_port/postgres" \
    >"$state/postgres.url")
say "PostgreSQL $pg_version on 127.0.0.1:$pg_port: $(since "$t")"

# --- munge: the shared key every SLURM daemon and client authenticates with --------------------
t=$EPOCHREALTIME
key=/etc/munge/munge.key
if [ ! -s "$key" ]; then
    (umask 077 && head -c 1024 /dev/urandom >"$key")
fi
chown munge:munge "$key"
chmod 400 "$key"
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    install -d -o munge -g munge -m 755 /run/munge
    # --force: a socket or pid file left by a munged that did not stop cleanly is stale here.
    runuser -u munge -- munged --force
    wait_for 30 munged bash -c 'munge -n | unmunge'
fi
say "munge: $(since "$t")"

# --- MariaDB: slurmdbd's database -------------------------------------------------------------
t=$EPOCHREALTIME
if ! mariadb-admin --silent ping >/dev/null 2>&1; then
    /etc/init.d/mariadb start >/dev/null
fi
wait_for 60 MariaDB mariadb-admin --silent ping
slurmdb_password=$(secret "$state/slurmdb.password")
mariadb <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'localhost';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$slurmdb_password';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
SQL
say "MariaDB: $(since "$t")"

# --- SLURM ------------------------------------------------------------------------------------
t=$EPOCHREALTIME
cpus=$(nproc)
# A little under the total: slurmd marks a node that has less memory than configured invalid.
memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
install -d /etc/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd
# Both files first: every client, sacctmgr included, finds slurmdbd through slurm.conf.
render "$here/slurm/slurm.conf.in" /etc/slurm/slurm.conf 644 slurmd slurmctld
render "$here/slurm/slurmdbd.conf.in" /etc/slurm/slurmdbd.conf 600 slurmdbd
running slurmdbd || slurmdbd
wait_for 60 slurmdbd sacctmgr -n list cluster
# slurmctld would register itself; registering first makes the accounting side explicit.
if ! sacctmgr -n -P list cluster format=Cluster | grep -qx genre-exp; then
    sacctmgr -i add cluster genre-exp >/dev/null
fi
running slurmctld || slurmctld
running slurmd || slurmd
node_state() { sinfo -h -n "$host" -o %T; }
node_up() { node_state | grep -Eq '^(idle|mixed|allocated|completing)$'; }
deadline=$((SECONDS + 60))
until node_up; do
    # A node left down or drained by an earlier run (killed daemons, a restarted machine).
    if node_state | grep -Eq '^(down|drained|draining)'; then
        scontrol update nodename="$host" state=resume 2>/dev/null || true
    fi
    ((SECONDS < deadline)) || die "node $host is $(node_state), not idle, after 60 s"
    sleep 1
done
probe=start-services-probe
timeout 120 srun -N 1 -n 1 -t 1 -J "$probe" hostname >/dev/null ||
    die "srun hostname did not answer"
# The job's record reaches slurmdbd a moment after it ends.
wait_for 60 "the probe job in sacct" bash -c \
    "sacct -n -X -S now-10minutes --name $probe -o State | grep -q COMPLETED"
partition=$(sinfo -h -o %P | grep '\*$' | tr -d '*')
say "SLURM cluster genre-exp, node $host ($cpus CPUs, $memory_mb MB), partition $partition: $(since "$t")"

say "all services up in $(since "$began")"
