#!/bin/sh
# sandbench VM initramfs /init (busybox sh). Loads the virtio modules, configures eth0 from the
# kernel command line, then either stays in the initramfs (minimal image: the agent becomes
# PID 1 and starts the first process) or mounts the root disk and switches to it, with the
# agent or systemd as init. Arguments read from /proc/cmdline:
#   sandbench.ip=ADDR/PREFIX sandbench.gw=ADDR   guest address and the host side of the link
#   sandbench.root=vda        root file system on that virtio disk (else: the initramfs)
#   sandbench.init=agent|systemd   what runs as PID 1 on the root disk
#   sandbench.data=vdX        ext4 disk mounted at /data
#   sandbench.vsock=PORT      the agent serves AF_VSOCK PORT instead of the virtio port
#   sandbench.argv=HEX        the first process (read by the agent)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "sandbench: init reached" > /dev/console

for m in $(cat /etc/sandbench/modules 2>/dev/null); do
    insmod "/lib/modules/$m.ko" 2>/dev/null
done

IP= GW= ROOT= INIT=agent DATA= VSOCK= HOST=sandbox
for x in $(cat /proc/cmdline); do
    case "$x" in
        sandbench.ip=*) IP="${x#*=}" ;;
        sandbench.gw=*) GW="${x#*=}" ;;
        sandbench.root=*) ROOT="${x#*=}" ;;
        sandbench.init=*) INIT="${x#*=}" ;;
        sandbench.data=*) DATA="${x#*=}" ;;
        sandbench.vsock=*) VSOCK="${x#*=}" ;;
        sandbench.hostname=*) HOST="${x#*=}" ;;
    esac
done

# Bounded wait for a device node or a sysfs entry the drivers create.
wait_for() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
    [ -e "$1" ] || echo "sandbench: $1 did not appear" > /dev/console
}

hostname "$HOST"
ip link set lo up
if [ -n "$IP" ]; then
    wait_for /sys/class/net/eth0
    ip addr add "$IP" dev eth0
    ip link set eth0 up
    [ -n "$GW" ] && ip route add default via "$GW"
fi

AGENT="/sb/agent --init"
[ -n "$VSOCK" ] && AGENT="/sb/agent --init --vsock $VSOCK"

if [ -z "$ROOT" ]; then
    mkdir -p /tmp /run /data /dev/pts /dev/shm
    mount -t tmpfs tmpfs /run
    mount -t devpts devpts /dev/pts
    mount -t tmpfs tmpfs /dev/shm
    if [ -n "$DATA" ]; then
        wait_for "/dev/$DATA"
        mount -t ext4 "/dev/$DATA" /data
    fi
    exec $AGENT
fi

wait_for "/dev/$ROOT"
mkdir -p /newroot
if ! mount -t ext4 -o rw "/dev/$ROOT" /newroot; then
    echo "sandbench: cannot mount /dev/$ROOT" > /dev/console
    poweroff -f
fi
if [ -n "$DATA" ]; then
    wait_for "/dev/$DATA"
    mkdir -p /newroot/data
    mount -t ext4 "/dev/$DATA" /newroot/data
fi
if [ "$INIT" = systemd ]; then
    umount /proc /sys 2>/dev/null
    mount --move /dev /newroot/dev
    exec switch_root /newroot /lib/systemd/systemd
fi
mount -t tmpfs tmpfs /newroot/run
mount -t tmpfs tmpfs /newroot/tmp
mount --move /dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot $AGENT
