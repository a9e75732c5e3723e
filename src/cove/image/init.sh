#!/bin/busybox sh
# cove's guest /init: load modules, mount the root image under a tmpfs overlay,
# configure the network, then hand PID 1 to the guest agent.
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
    echo "cove-init: error: $*" > /dev/console
    sync
    poweroff -f
}

mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
# The kernel gives the command line's MODULE.PARAM=VALUE entries only to built-in code;
# modules loaded here get theirs as modprobe would pass them (Firecracker without ACPI
# describes its devices as virtio_mmio.device=...). A parameter a module lacks is ignored
# by the kernel with a warning. No subshells: each fork costs milliseconds under TCG.
read -r cmdline < /proc/cmdline
set -f  # the words are parameters, never globs
while read -r module; do
    name="${module%.ko}"
    params=""
    for word in $cmdline; do
        case "$word" in "$name".*=*) params="$params ${word#"$name".}" ;; esac
    done
    insmod "/lib/modules/$module" $params || fail "cannot load kernel module $module"
done < /cove/load
set +f
. /cove/init.env

# Disks are found by the serial cove gave them (drive order is not stable everywhere).
disk=""
find_disk() {
    tries=0
    while [ "$tries" -lt 100 ]; do
        for block in /sys/block/vd*; do
            serial=""
            read -r serial < "$block/serial" 2>/dev/null  # (no newline at its end)
            if [ "$serial" = "$1" ]; then
                disk="/dev/${block##*/}"
                return 0
            fi
        done
        tries=$((tries + 1))
        sleep 0.05
    done
    fail "no disk with serial $1"
}

# Shares and volumes, one per line: KIND SOURCE TARGET OPTIONS
mount_all() {
    while read -r kind source target options; do
        mkdir -p "/newroot$target"
        case "$kind" in
            virtiofs) mount -t virtiofs -o "$options" "$source" "/newroot$target" ;;
            9p) mount -t 9p -o "trans=virtio,version=9p2000.L,$options" "$source" \
                    "/newroot$target" ;;
            disk) find_disk "$source"; mount -t "$options" "$disk" "/newroot$target" ;;
            overlay) mkdir -p "/newroot$target.rw" &&
                mount -t tmpfs -o mode=0755 store-rw "/newroot$target.rw" &&
                mkdir -p "/newroot$target.rw/upper" "/newroot$target.rw/work" &&
                mount -t overlay -o "lowerdir=/newroot$source,upperdir=/newroot$target.rw/upper,workdir=/newroot$target.rw/work" \
                    store "/newroot$target" ;;
        esac || fail "cannot mount $kind $source at $target"
    done < /cove/mounts
}

find_disk "$COVE_ROOT_SERIAL"
root="$disk"

mkdir -p /lower /rw /newroot
mount -t "$COVE_ROOT_FS" -o ro "$root" /lower || fail "cannot mount the root image $root"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /newroot \
    || fail "cannot mount the root overlay"
mount_all

mkdir -p /newroot/cove /newroot/proc /newroot/sys /newroot/dev /newroot/tmp /newroot/run \
    /newroot/etc
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm

# Config: a read-only tmpfs at /config. Secrets: a tmpfs at /run/secrets, files 0400 (the
# agent gives them to the service user). Neither is copied anywhere else.
if [ -d /cove/config ]; then
    mkdir -p /newroot/config
    mount -t tmpfs -o mode=0755 config /newroot/config
    cp -a /cove/config/. /newroot/config/
    mount -t tmpfs -o remount,ro config /newroot/config || fail "cannot make /config read-only"
    rm -rf /cove/config
fi
if [ -d /cove/secrets ]; then
    mkdir -p /newroot/run/secrets
    mount -t tmpfs -o mode=0711,nosuid,nodev,noexec secrets /newroot/run/secrets
    cp -a /cove/secrets/. /newroot/run/secrets/
    find /newroot/run/secrets -type f | while read -r file; do chmod 0400 "$file"; done
    chmod 0711 /newroot/run/secrets
    rm -rf /cove/secrets
fi
cp -a /cove/. /newroot/cove/

hostname "$COVE_HOSTNAME"
echo "127.0.1.1	$COVE_HOSTNAME" >> /newroot/etc/hosts
ip link set lo up
if [ -n "$COVE_IP" ]; then
    ip addr add "$COVE_IP" dev eth0 || fail "cannot configure eth0"
    ip link set eth0 up
    ip route add default via "$COVE_GATEWAY"
    echo "nameserver $COVE_DNS" > /newroot/etc/resolv.conf
fi
# A stack's segment: the NIC is found by the MAC cove gave it (NIC order is not an ABI);
# the stack's names go to /etc/hosts, so `web` reaches `db` without any DNS server.
if [ -n "$COVE_SEG_IP" ]; then
    segment=""
    for dev in /newroot/sys/class/net/*; do  # (sysfs has moved there)
        read -r mac < "$dev/address"
        [ "$mac" = "$COVE_SEG_MAC" ] && segment="${dev##*/}"
    done
    [ -n "$segment" ] || fail "no NIC with the stack segment's MAC $COVE_SEG_MAC"
    ip addr add "$COVE_SEG_IP" dev "$segment" || fail "cannot configure $segment"
    ip link set "$segment" up
    for pair in $COVE_SEG_HOSTS; do
        echo "${pair#*=}	${pair%%=*}" >> /newroot/etc/hosts
    done
fi

# -c and an import (not a script path), so Python loads the agent's precompiled bytecode
exec switch_root /newroot /usr/bin/python3 -S -B \
    -c 'import sys; sys.path[0] = "/cove"; from cove.guest import agent; agent.main()'

