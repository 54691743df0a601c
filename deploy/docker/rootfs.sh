#!/bin/sh
# Lays out the image's file tree in ROOT (see Dockerfile): the pilotfish
# binary, the shared libraries it loads (glibc, libm, libgcc_s and the
# dynamic loader, copied from the build stage, which is Debian bookworm
# either way), iptables for capture, and the users the image runs as.
#
#   rootfs.sh ROOT [BINARY]    BINARY: a prebuilt binary; default: build it
set -eu
root=$1
binary=${2:-}

if [ -z "$binary" ]; then
    cargo build --profile dist --locked
    binary=target/dist/pilotfish
fi
[ -x "$binary" ] || { echo "rootfs.sh: no executable at $binary" >&2; exit 1; }

mkdir -p "$root/usr/local/bin" "$root/etc"
cp "$binary" "$root/usr/local/bin/pilotfish"
# Symbols are for debugging builds, not for shipping (about 3/4 of the size).
if command -v strip >/dev/null; then
    strip "$root/usr/local/bin/pilotfish"
fi

# Every library a program loads, at the path it is loaded from, the
# dynamic loader included; `ldd` prints "name => /path (addr)" or "/path (addr)".
copy_libraries() {
    ldd "$1" | awk '{ for (i = 1; i <= NF; i++) if (substr($i, 1, 1) == "/") print $i }' |
        while read -r lib; do
            mkdir -p "$root$(dirname "$lib")"
            cp -L "$lib" "$root$lib"
        done
}
copy_libraries "$binary"

# iptables for `pilotfish capture install` (the pod's init step, which runs
# as root with NET_ADMIN): the nft variant, under the names capture calls,
# and the extensions its rules use (tcp ports, owner, REDIRECT).
multi=$(command -v xtables-nft-multi || true)
[ -n "$multi" ] || { echo "rootfs.sh: no xtables-nft-multi (install iptables)" >&2; exit 1; }
mkdir -p "$root/usr/sbin"
cp "$multi" "$root/usr/sbin/xtables-nft-multi"
for name in iptables iptables-restore iptables-save; do
    ln -sf xtables-nft-multi "$root/usr/sbin/$name"
done
copy_libraries "$multi"
extensions=/usr/lib/x86_64-linux-gnu/xtables
mkdir -p "$root$extensions"
for ext in libxt_standard libxt_tcp libxt_owner libxt_REDIRECT; do
    cp "$extensions/$ext.so" "$root$extensions/"
done

# Names for the UIDs, so `ps` and logs show them; no shell, no home.
cat > "$root/etc/passwd" <<'USERS'
root:x:0:0:root:/:/sbin/nologin
pilotfish:x:2102:2102:pilotfish sidecar:/:/sbin/nologin
app:x:1000:1000:demo app:/:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
USERS
cat > "$root/etc/group" <<'GROUPS'
root:x:0:
pilotfish:x:2102:
app:x:1000:
nogroup:x:65534:
GROUPS
# Where certificates are mounted. A named volume mounted here starts as
# a copy of this folder, owner included, so the sidecar's user can write
# to a fresh one (`pilotfish certs mesh` in deploy/compose).
mkdir -p "$root/var/run/pilotfish/certs"
chown 2102:2102 "$root/var/run/pilotfish/certs"

# Name lookups: /etc/hosts first (Docker and Kubernetes write it), then DNS.
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
