#!/bin/busybox sh
# cove's guest /init: load modules, mount the root image under an overlay,
# configure the network, then hand PID 1 to the guest agent.
# `/init later CMDLINE`: the background half, which /init starts itself (see the end).
export PATH=/bin
[ "$1" = later ] || /bin/busybox --install -s /bin

fail() {
    echo "cove-init: error: $*"  # (stdout is the console: /dev may have moved already)
    sync
    poweroff -f
}

warn() {
    echo "cove-init: warning: $*"
}

# load_modules LIST CMDLINE ON_FAILURE
# The kernel gives the command line's MODULE.PARAM=VALUE entries only to built-in code;
# modules loaded here get theirs as modprobe would pass them (Firecracker without ACPI
# describes its devices as virtio_mmio.device=...). A parameter a module lacks is ignored
# by the kernel with a warning. No subshells: each fork costs milliseconds under TCG.
load_modules() {
    set -f  # the words are parameters, never globs
    while read -r module; do
        name="${module%.ko}"
        params=""
        for word in $2; do
            case "$word" in "$name".*=*) params="$params ${word#"$name".}" ;; esac
        done
        insmod "/lib/modules/$module" $params || "$3" "cannot load kernel module $module"
    done < "$1"
    set +f
}

if [ "$1" = later ]; then
    # The modules nothing waits for (power button, balloon), then what of the initramfs
    # the root no longer needs (about 2 MiB stays, hidden: busybox and this script). The
    # root was moved over this initramfs meanwhile, but this process keeps seeing the
    # initramfs as its root. It waits for the agent's word on fd 9 (the FIFO /cove/go):
    # the host answered, the services' health checks have their first verdicts. Run while
    # they start, even at the lowest priority, it cost the agent's start ~25 ms under TCG
    # (its forks and the modules' probes are a single vCPU's too).
    read -r _ <&9
    exec 9<&-
    renice -n 19 -p $$  # (busybox has no `nice`)
    load_modules /cove/later "$2" warn
    rm -rf /lib/modules /cove /config /secrets
    kill -USR1 1  # the agent: watch the power button, which may have appeared now
    exit 0
fi

mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
read -r cmdline < /proc/cmdline
load_modules /cove/load "$cmdline" fail
. /cove/init.env

# Disks are found by the serial cove gave them (drive order is not stable everywhere).
# find_disk SERIAL [ROOT]: sets $disk; ROOT is where /sys and /dev are (/newroot later).
disk=""
find_disk() {
    tries=0
    while [ "$tries" -lt 100 ]; do
        for block in "$2"/sys/block/vd*; do
            serial=""
            read -r serial < "$block/serial" 2>/dev/null  # (no newline at its end)
            if [ "$serial" = "$1" ]; then
                disk="$2/dev/${block##*/}"
                return 0
            fi
        done
        tries=$((tries + 1))
        sleep 0.05
    done
    fail "no disk with serial $1"
}

# Shares and volumes, one per line: KIND SOURCE TARGET OPTIONS (once /dev and /sys are
# the root's)
mount_all() {
    while read -r kind source target options; do
        mkdir -p "/newroot$target"
        case "$kind" in
            virtiofs) mount -t virtiofs -o "$options" "$source" "/newroot$target" ;;
            9p) mount -t 9p -o "trans=virtio,version=9p2000.L,$options" "$source" \
                    "/newroot$target" ;;
            disk) find_disk "$source" /newroot; mount -t "$options" "$disk" "/newroot$target" ;;
            overlay) mkdir -p "/newroot$target.rw" &&
                mount -t tmpfs -o mode=0755 store-rw "/newroot$target.rw" &&
                mkdir -p "/newroot$target.rw/upper" "/newroot$target.rw/work" &&
                mount -t overlay -o "lowerdir=/newroot$source,upperdir=/newroot$target.rw/upper,workdir=/newroot$target.rw/work" \
                    store "/newroot$target" ;;
        esac || fail "cannot mount $kind $source at $target"
    done < /cove/mounts
}

# cove owns /etc/hosts (the image's has only localhost): this VM's name and its stack's
# (so `web` reaches `db` without any DNS server).
write_hosts() {
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t%s\n' "$COVE_HOSTNAME"
    for pair in $COVE_SEG_HOSTS; do
        printf '%s\t%s\n' "${pair#*=}" "${pair%%=*}"
    done
}

# What cove writes into the root goes straight into the overlay's upper layer, /upper,
# which came in the initramfs with the agent's package and config: written through the
# overlay, a file is first copied up from the image (a block of the image decompressed),
# and each file created costs the overlay's bookkeeping.
write_hosts > /upper/etc/hosts
[ -z "$COVE_IP" ] || echo "nameserver $COVE_DNS" > /upper/etc/resolv.conf
upper=/upper
case " $cmdline " in *" root="* | *" rootfstype="*)
    # The kernel makes the initramfs a ramfs then, not a tmpfs, and overlayfs wants
    # xattrs of its upper layer: a tmpfs instead (as kvmtool, which adds root=, boots).
    mount -t tmpfs -o mode=0755 rw /rw && cp -a /upper /rw/ && mkdir /rw/work ||
        fail "cannot make a tmpfs for the root's upper layer"
    upper=/rw/upper ;;
esac
# One `mount -a` for the root image, the overlay, /dev /proc /sys (moved), /tmp, /run,
# /dev/pts, /dev/shm and the busybox bind: every command is a fork and most an exec of
# busybox, milliseconds each under TCG.
find_disk "$COVE_ROOT_SERIAL"
mkdir -p /dev/pts /dev/shm
{
    echo "$disk /lower $COVE_ROOT_FS ro 0 0"
    echo "root /newroot overlay lowerdir=/lower,upperdir=$upper,workdir=${upper%upper}work 0 0"
    while read -r line; do echo "$line"; done < /fstab
    # A host-source root's busybox is this initramfs's own binary: the root gets this one,
    # already loaded and already translated by QEMU, so a service's first `sh -c` does not
    # decompress 2 MiB from the image (~45 ms of a cold start under TCG).
    [ -z "$COVE_SHARED_BUSYBOX" ] || echo "/bin/busybox /newroot$COVE_SHARED_BUSYBOX none bind 0 0"
} > /fstab.boot
mount -a -T /fstab.boot || fail "cannot mount the root image $disk and the system filesystems"
mount_all

# Config: a read-only tmpfs at /config. Secrets: a tmpfs at /run/secrets, files 0400 (the
# agent gives them to the service user). Neither is copied anywhere else.
# They arrive beside /cove in the initramfs; the background half removes them from it.
if [ -d /config ]; then
    mkdir -p /newroot/config
    mount -t tmpfs -o mode=0755 config /newroot/config
    cp -a /config/. /newroot/config/
    mount -t tmpfs -o remount,ro config /newroot/config || fail "cannot make /config read-only"
fi
if [ -d /secrets ]; then
    mkdir -p /newroot/run/secrets
    mount -t tmpfs -o mode=0711,nosuid,nodev,noexec secrets /newroot/run/secrets
    cp -a /secrets/. /newroot/run/secrets/
    find /newroot/run/secrets -type f | while read -r file; do chmod 0400 "$file"; done
    chmod 0711 /newroot/run/secrets
fi
echo "$COVE_HOSTNAME" > /newroot/proc/sys/kernel/hostname

# The rest of the modules load in the background once the agent says so (see the top).
exec 9<>/cove/go
/init later "$cmdline" &
# The root moves over the initramfs and the agent starts chrooted into it, as switch_root
# does, but without switch_root: under TCG it delayed the agent's start by ~0.1 s.
cd /newroot && mount --move . / || fail "cannot move the root over the initramfs"
# The agent brings up the network itself (ioctls: no process per address and route). It is
# imported from /cove/lib, its sources with their bytecode, and so are the C modules it
# imports at start when the root's Python is the host's; -c and an import, not a script
# path, so that its bytecode is used.
export COVE_LATER_FD=9
exec chroot . /usr/bin/python3 -S -B \
    -c 'import sys; sys.path[0] = "/cove/lib"
from cove.guest import agent; agent.main()'

