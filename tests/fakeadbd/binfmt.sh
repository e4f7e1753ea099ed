#!/bin/sh
# Let this machine run aarch64 executables through qemu-user, also inside a chroot (the loopback
# phone's arm64 mode, tests/fakeadbd/sandbox.py): binfmt_misc's qemu-aarch64 entry, registered
# from qemu-user-static's /usr/lib/binfmt.d/qemu-aarch64.conf.  That line carries the F flag: the
# kernel opens qemu once, at registration, so a chroot needs no qemu of its own.
#
#   tests/fakeadbd/binfmt.sh            # mount binfmt_misc and register qemu-aarch64 if needed
#
# Exit 0 and one line "qemu-aarch64 INTERPRETER flags FLAGS" when aarch64 executables run here
# (already, or now); "native aarch64" on an arm64 machine.  Otherwise exit 1 with one sentence
# on stdout saying why and what would fix it.  Mounting and registering need root (the tests'
# fixture calls this; CI runs as root); nothing is changed when all is in place.
set -u
DIR=/proc/sys/fs/binfmt_misc
NAME=qemu-aarch64
CONF=${QEMU_AARCH64_BINFMT:-/usr/lib/binfmt.d/qemu-aarch64.conf}

fail() { echo "$*"; exit 1; }

case "$(uname -m)" in aarch64|arm64) echo "native aarch64"; exit 0 ;; esac
[ "$(uname -s)" = Linux ] || fail "aarch64 emulation needs Linux's binfmt_misc (this is $(uname -s))."
root=no
[ "$(id -u)" = 0 ] && root=yes

if [ ! -e "$DIR/register" ]; then
    [ "$root" = yes ] || fail "binfmt_misc is not mounted at $DIR and mounting it needs root (as root: mount -t binfmt_misc binfmt_misc $DIR)."
    mount -t binfmt_misc binfmt_misc "$DIR" 2>/dev/null \
        || fail "cannot mount binfmt_misc at $DIR (a container without the privilege to mount it?)."
fi
[ "$(cat "$DIR/status" 2>/dev/null)" = enabled ] || fail "binfmt_misc is disabled ($DIR/status; as root: echo 1 > $DIR/status)."

if [ ! -e "$DIR/$NAME" ]; then
    [ -r "$CONF" ] || fail "no $CONF: install qemu-user-static (make install-cross; apt-get install qemu-user-static)."
    line=$(grep -v '^[#;]' "$CONF" | grep "^:$NAME:" | head -1)
    interpreter=$(printf '%s' "$line" | cut -d: -f7)
    [ -n "$interpreter" ] && [ -x "$interpreter" ] || fail "$CONF names no executable interpreter ('$interpreter'): reinstall qemu-user-static."
    [ "$root" = yes ] || fail "qemu-aarch64 is not registered with binfmt_misc and registering it needs root (as root: tests/fakeadbd/binfmt.sh)."
    printf '%s' "$line" >"$DIR/register" 2>/dev/null || [ -e "$DIR/$NAME" ] \
        || fail "the kernel refused to register $CONF's line in $DIR/register."
fi
grep -q '^enabled' "$DIR/$NAME" || fail "the binfmt_misc entry $DIR/$NAME is disabled (as root: echo 1 > $DIR/$NAME)."
echo "$NAME $(sed -n 's/^interpreter //p' "$DIR/$NAME") flags $(sed -n 's/^flags: *//p' "$DIR/$NAME")"
