#!/usr/bin/env bash
# A throwaway one-node Ceph cluster with a RADOS Gateway: a real S3 server for the tests.
#
#   scripts/ceph-rgw.sh start DIR    # fresh cluster in DIR (must not exist or be empty);
#                                    # prints RGW_ENDPOINT=, RGW_ACCESS_KEY=, RGW_SECRET_KEY=
#                                    # (also written to DIR/env)
#   scripts/ceph-rgw.sh stop DIR     # stops the daemons started in DIR, removes DIR
#
# One monitor, one OSD with the memstore object store (data in RAM, capped by
# CEPH_MEMSTORE_BYTES, default 1 GiB; no block device), one radosgw (beast frontend). Everything
# binds 127.0.0.1 only, on ports picked free at start; a new fsid and directory per run, so
# several clusters (several test sessions, several engineers) can run side by side.
# Needs Debian's ceph-mon, ceph-osd, radosgw, ceph-common (scripts/install-test-deps.sh).
# Settings and their reasons: shared/GUIDE.md, "A real S3 server on one machine".
set -euo pipefail

ACCESS_KEY="${RGW_ACCESS_KEY:-cargohold-rgw}"
SECRET_KEY="${RGW_SECRET_KEY:-cargohold-rgw-secret}"
TIMEOUT="${CEPH_START_TIMEOUT:-120}"

die() { echo "ceph-rgw: $*" >&2; exit 1; }

free_ports() {
    # $1 ports in a row, all free on 127.0.0.1 (the OSD binds a range of them).
    python3 - "$1" <<'EOF'
import random, socket, sys
count = int(sys.argv[1])
for _ in range(200):
    base = random.randrange(20000, 60000 - count)
    socks = []
    try:
        for port in range(base, base + count):
            s = socket.socket()
            s.bind(("127.0.0.1", port))
            socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    sys.exit(0)
sys.exit("no free port range")
EOF
}

wait_for() {
    # wait_for WHAT COMMAND...: poll until COMMAND succeeds, or give up after $TIMEOUT s.
    local what="$1" waited=0
    shift
    until "$@" >/dev/null 2>&1; do
        if [ "$waited" -ge $((TIMEOUT * 10)) ]; then
            die "$what not ready after ${TIMEOUT}s (logs in $DIR/log)"
        fi
        for pidfile in "$DIR"/run/*.pid; do
            [ -e "$pidfile" ] || continue
            kill -0 "$(cat "$pidfile")" 2>/dev/null || die "$(basename "$pidfile" .pid) exited (logs in $DIR/log)"
        done
        sleep 0.1
        waited=$((waited + 1))
    done
}

spawn() {
    # spawn NAME COMMAND...: run a daemon in the foreground mode (-f) in its own session.
    local name="$1"
    shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
}

start() {
    [ -d "$DIR" ] && [ -n "$(ls -A "$DIR")" ] && die "$DIR is not empty"
    for cmd in ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph; do
        command -v "$cmd" >/dev/null || die "$cmd not installed (scripts/install-test-deps.sh)"
    done
    mkdir -p "$DIR"/{run,log,mon,osd,rgw}
    DIR="$(cd "$DIR" && pwd)"
    local fsid base mon_port rgw_port
    fsid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    base="$(free_ports 12)"
    mon_port="$base"
    rgw_port=$((base + 1))
    cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind port min = $((base + 2))
ms bind port max = $((base + 11))
ms bind msgr1 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.daemon-pid
mon data = $DIR/mon/\$cluster-\$id
osd data = $DIR/osd/\$cluster-\$id
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
paxos propose interval = 0.01
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-1073741824}
mon max pg per osd = 1000

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $DIR/rgw
rgw dns name = 127.0.0.1
EOF
    export CEPH_CONF="$DIR/ceph.conf"

    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon --mkfs -i a --monmap "$DIR/monmap" >"$DIR/log/mkfs-mon.out" 2>&1
    spawn mon ceph-mon -f -i a
    wait_for "monitor" timeout 5 ceph -s

    local osd_uuid osd_id
    osd_uuid="$(python3 -c 'import uuid; print(uuid.uuid4())')"
    osd_id="$(timeout 30 ceph osd new "$osd_uuid")"
    mkdir -p "$DIR/osd/ceph-$osd_id"
    ceph-osd -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/mkfs-osd.out" 2>&1
    spawn osd ceph-osd -f -i "$osd_id"
    osd_up() { timeout 5 ceph osd stat -f json | grep -q '"num_up_osds":1'; }
    wait_for "osd" osd_up

    spawn rgw radosgw -f -n client.rgw.a
    wait_for "radosgw" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$rgw_port/', timeout=2)"
    radosgw-admin -n client.rgw.a user create --uid=cargohold --display-name=cargohold \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >"$DIR/log/user.out" 2>&1
    {
        echo "RGW_ENDPOINT=http://127.0.0.1:$rgw_port"
        echo "RGW_ACCESS_KEY=$ACCESS_KEY"
        echo "RGW_SECRET_KEY=$SECRET_KEY"
    } >"$DIR/env"
    cat "$DIR/env"
}

stop() {
    [ -d "$DIR/run" ] || die "no cluster in $DIR"
    local name pid
    for name in rgw osd mon; do
        [ -e "$DIR/run/$name.pid" ] || continue
        pid="$(cat "$DIR/run/$name.pid")"
        kill -TERM "$pid" 2>/dev/null || true
    done
    for name in rgw osd mon; do
        [ -e "$DIR/run/$name.pid" ] || continue
        pid="$(cat "$DIR/run/$name.pid")"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$DIR"
}

[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
DIR="$2"
case "$1" in
    start) start ;;
    stop) stop ;;
    *) die "usage: $0 start|stop DIR" ;;
esac
