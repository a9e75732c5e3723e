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
while read -r module; do
    insmod "/lib/modules/$module" || fail "cannot load kernel module $module"
done < /cove/modules
. /cove/init.env

find_disk() {
    for block in /sys/block/vd*; do
        if [ "$(cat "$block/serial" 2>/dev/null)" = "$1" ]; then
            echo "/dev/${block##*/}"
            return 0
        fi
    done
    return 1
}

tries=0
until root=$(find_disk "$COVE_ROOT_SERIAL"); do
    tries=$((tries + 1))
    [ "$tries" -gt 100 ] && fail "no disk with serial $COVE_ROOT_SERIAL"
    sleep 0.05
done

mkdir -p /lower /rw /newroot
mount -t "$COVE_ROOT_FS" -o ro "$root" /lower || fail "cannot mount the root image $root"
mount -t tmpfs -o mode=0755 rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work root /newroot \
    || fail "cannot mount the root overlay"

mkdir -p /newroot/cove /newroot/proc /newroot/sys /newroot/dev /newroot/tmp /newroot/run \
    /newroot/etc
cp -a /cove/. /newroot/cove/
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount -t tmpfs -o mode=1777 tmp /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 shm /newroot/dev/shm

hostname "$COVE_HOSTNAME"
echo "127.0.1.1	$COVE_HOSTNAME" >> /newroot/etc/hosts
ip link set lo up
if [ -n "$COVE_IP" ]; then
    ip addr add "$COVE_IP" dev eth0 || fail "cannot configure eth0"
    ip link set eth0 up
    ip route add default via "$COVE_GATEWAY"
    echo "nameserver $COVE_DNS" > /newroot/etc/resolv.conf
fi

# -c and an import (not a script path), so Python loads the agent's precompiled bytecode
exec switch_root /newroot /usr/bin/python3 -S -B \
    -c 'import sys; sys.path[0] = "/cove"; import agent; agent.main()'

