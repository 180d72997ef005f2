# SPDX-License-Identifier: MIT
# What tests/vm/run-in-vm (one guest) and tests/vm/run-two-guests (two guests joined by an
# emulated link) share, sourced by both (bash): the host checks, Debian's kernel with rdma_rxe,
# the cached initramfs whose init mounts the host's root read-only over 9p and chroots into it,
# the 9p shares of directories that the guest needs at their own paths, the stage-2 prologue and
# QEMU's common arguments. See docs/testing.md.
#
# The sourcing script sets vm_prog (its name, for messages) first.

vm_common_file=$(realpath "${BASH_SOURCE[0]}")
vm_dir=$(dirname "$vm_common_file")
vm_repo_top=$(realpath "$vm_dir/../..")

vm_die() { echo "$vm_prog: $*" >&2; exit 2; }

# Root, QEMU and a static busybox.
vm_check_host() {
  [ "$(id -u)" = 0 ] || vm_die "must run as root (9p export of / with security_model=none)"
  command -v qemu-system-x86_64 >/dev/null || vm_die "qemu-system-x86_64 missing: apt-get install qemu-system-x86"
  [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 \
    || vm_die "a static /bin/busybox is needed for the initramfs: apt-get install busybox-static"
}

# The newest Debian kernel with rdma_rxe among its modules: sets vm_kver, vm_kernel, vm_moddir.
vm_find_kernel() {
  vm_kver=""
  local dir v
  for dir in $(ls -d /lib/modules/*-amd64 2>/dev/null | sort -V -r); do
    v=$(basename "$dir")
    if [ -f "/boot/vmlinuz-$v" ] && find "$dir" -name 'rdma_rxe.ko*' | grep -q .; then vm_kver=$v; break; fi
  done
  [ -n "$vm_kver" ] || vm_die "no Debian kernel with rdma_rxe found: apt-get install linux-image-amd64"
  vm_kernel=/boot/vmlinuz-$vm_kver
  vm_moddir=/lib/modules/$vm_kver
}

# The initramfs: busybox plus the modules needed to mount the host's root over 9p, built once
# and cached (rebuilt when this file changes). Its init finds the stage-2 script to run (a path
# in the host's root) on the kernel command line: sansock.stage2=PATH. Sets vm_initrd.
vm_build_initramfs() {
  local cache=${SANSOCK_VM_CACHE:-/var/tmp/sansock-vm}
  mkdir -p "$cache"
  vm_initrd=$cache/initramfs-$vm_kver.cpio.gz
  local init_modules="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p"
  [ -s "$vm_initrd" ] && [ ! "$vm_initrd" -ot "$vm_common_file" ] && return 0
  local stage m f
  stage=$(mktemp -d /tmp/sansock-initrd.XXXXXX)
  mkdir -p "$stage"/{bin,dev,proc,sys,newroot,modules}
  cp /bin/busybox "$stage/bin/busybox"
  for m in $init_modules; do
    f=$(find "$vm_moddir" -name "$m.ko*" | head -n1)
    if [ -z "$f" ]; then
      # Built into this kernel: nothing to insert.
      grep -q "/$m.ko" "$vm_moddir/modules.builtin" 2>/dev/null || { rm -rf "$stage"; vm_die "module $m not found in $vm_moddir"; }
      continue
    fi
    case "$f" in
      *.ko.xz) xz -dc "$f" > "$stage/modules/$m.ko" ;;
      *.ko.zst) zstd -dqc "$f" > "$stage/modules/$m.ko" ;;
      *) cp "$f" "$stage/modules/$m.ko" ;;
    esac
  done
  cat > "$stage/init" <<INIT
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev
for m in $init_modules; do
  [ -f /modules/\$m.ko ] && /bin/busybox insmod /modules/\$m.ko
done
/bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /newroot \
  || { echo "SANSOCK_VM_EXIT=125 (cannot mount the host root)"; /bin/busybox poweroff -f; }
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox mount --move /proc /newroot/proc
/bin/busybox mount --move /sys /newroot/sys
stage2=\$(/bin/busybox sed -n 's/.*sansock.stage2=\\([^ ]*\\).*/\\1/p' /newroot/proc/cmdline)
exec /bin/busybox chroot /newroot /bin/sh "\$stage2"
INIT
  chmod +x "$stage/init"
  (cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) > "$vm_initrd.tmp.$$"
  mv "$vm_initrd.tmp.$$" "$vm_initrd"
  rm -rf "$stage"
}

# The directories shared again at their own paths, given the writable ones (arguments): the
# guest mounts tmpfs over /tmp and /run, so a repository there (a CI clone, say) is shared
# again read-only, and so is the working directory; each writable directory is shared writable.
# Sets vm_mount_list (TAG=PATH pairs for vm_stage2_prologue) and vm_share_args (QEMU's
# -virtfs options).
vm_share_dirs() {
  local ro_dirs=() d i
  for d in "$vm_repo_top" "$PWD"; do
    case "$d/" in /tmp/*|/run/*) ro_dirs+=("$d") ;; esac
  done
  vm_mount_list=""
  vm_share_args=()
  i=0
  for d in "${ro_dirs[@]}"; do
    vm_mount_list+="ro$i=$d "
    vm_share_args+=(-virtfs "local,path=$d,mount_tag=ro$i,security_model=none,readonly=on,multidevs=remap")
    i=$((i+1))
  done
  i=0
  for d in "$@"; do
    vm_mount_list+="rw$i=$d "
    vm_share_args+=(-virtfs "local,path=$d,mount_tag=rw$i,security_model=none,multidevs=remap")
    i=$((i+1))
  done
}

# Prints the start of a stage-2 script (it runs in the chroot, on the host's own userspace):
# tmpfs on /tmp and /run, the job share (tag `job`, writable) at $1, the shares of
# vm_share_dirs, devpts, /dev/shm, loopback up, the host name $2.
vm_stage2_prologue() {
  cat <<STAGE2
set -u
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p $1
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 job $1
for pair in $vm_mount_list; do
  mkdir -p "\${pair#*=}" 2>/dev/null
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 "\${pair%%=*}" "\${pair#*=}" \\
    || echo "$vm_prog: cannot mount \${pair#*=} in the guest"
done
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
ip link set lo up
hostname $2
STAGE2
}

# QEMU's arguments common to every guest, given the number of vCPUs ($1), the memory ($2), the
# stage-2 script ($3, a path the guest sees in the host's root) and the host directory shared
# writable as the job share ($4). The caller adds its network, console and vm_share_args.
vm_qemu_args() {
  vm_qemu=(qemu-system-x86_64
    -accel "${SANSOCK_VM_ACCEL:-tcg}" -machine q35 -cpu max -smp "$1" -m "$2"
    -kernel "$vm_kernel" -initrd "$vm_initrd"
    -append "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init sansock.stage2=$3"
    -no-reboot -monitor none
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
    -virtfs "local,path=$4,mount_tag=job,security_model=none,multidevs=remap")
}
