#!/usr/bin/env bash
# The Debian package as an operator meets it: builds it (packaging/build-deb.sh, or takes
# DEB=path), installs it with apt into a clean Debian 12 chroot (debootstrap minbase), then
# checks, with the installed files only:
#   - the files: binary, unit files, the conffile /etc/spray/spray.toml, man pages,
#     completions; the user `spray` exists;
#   - `spray check` (no --config: the default path) passes as user spray;
#   - `spray demo` passes inside a network namespace of its own;
#   - the unit's own ExecStart serves the default config as user spray, and its ExecReload
#     (`spray ctl reload`) exits 0 for a good config and non-zero for a refused one, which
#     leaves the running table as it was;
#   - systemd-analyze security rates the installed spray.service at 2.5 or below.
# Needs root. Tears down what it made (process, namespace, mounts, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "error: package-tests.sh needs root (debootstrap, chroot, ip netns)" >&2
    exit 1
fi
mirror="${SPRAY_DEB_MIRROR:-http://deb.debian.org/debian}"
ns="spray-pkg-$$"
root="$(mktemp -d /tmp/spray-pkg-root.XXXXXX)"
chmod 0755 "$root"   # the chroot's /, which user spray must traverse
pid=""
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
cleanup() {
    set +e
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
    umount "$root/proc" 2>/dev/null
    rm -rf "$root"
}
trap cleanup EXIT

if [ -z "${DEB:-}" ]; then
    DEB=$(packaging/build-deb.sh | tail -1)
fi
[ -f "$DEB" ] || fail "no package at $DEB"
echo "package: $DEB"

echo "==> a clean Debian 12 chroot in $root"
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$root.debootstrap.log" 2>&1 \
    || { tail -20 "$root.debootstrap.log"; fail "debootstrap"; }
rm -f "$root.debootstrap.log"
mount -t proc proc "$root/proc"
# Nothing may start services inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cp "$DEB" "$root/tmp/spray.deb"
in_root() { chroot "$root" "$@"; }
as_spray() { chroot --userspec=spray:spray "$root" "$@"; }

echo "==> apt-get install ./spray.deb"
in_root apt-get update -q > /dev/null 2>&1 || fail "apt-get update in the chroot"
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -q --no-install-recommends /tmp/spray.deb \
    > "$root/tmp/install.log" 2>&1 || { tail -30 "$root/tmp/install.log"; fail "install"; }
ok "installed"

for f in /usr/bin/spray /etc/spray/spray.toml /usr/lib/systemd/system/spray.service \
    /usr/lib/systemd/system/spray-dpdk.service /usr/share/man/man1/spray.1.gz \
    /usr/share/man/man1/spray-run.1.gz /usr/share/bash-completion/completions/spray \
    /usr/share/zsh/vendor-completions/_spray /usr/share/doc/spray/config.md \
    /usr/share/doc/spray/examples/minimal.toml /usr/share/doc/spray/ha/check-spray.sh; do
    [ -e "$root$f" ] || fail "$f not installed"
done
in_root dpkg-query -W -f='${Conffiles}\n' spray | grep -q '^ /etc/spray/spray.toml ' \
    || fail "/etc/spray/spray.toml is not a conffile (an upgrade would overwrite the operator's config)"
zcat "$root/usr/share/man/man1/spray.1.gz" | grep -q '^\.TH spray 1' || fail "spray.1 is not a man page"
in_root getent passwd spray > /dev/null || fail "no user spray"
ok "files, conffile, man pages, completions, user spray"

version=$(in_root spray --version)
echo "$version" | grep -q '^spray .*(features: socket' || fail "spray --version: $version"
ok "$version"

as_spray spray check > "$root/tmp/check.out" 2>&1 || { cat "$root/tmp/check.out"; fail "spray check (the default config, as user spray)"; }
grep -q '^/etc/spray/spray.toml: ok' "$root/tmp/check.out" || fail "spray check did not read the default path"
ok "spray check reads /etc/spray/spray.toml as user spray"

ip netns add "$ns"
ip -n "$ns" link set lo up
ip netns exec "$ns" chroot "$root" spray demo > "$root/tmp/demo.out" 2>&1 \
    || { cat "$root/tmp/demo.out"; fail "spray demo"; }
ok "spray demo: $(tail -1 "$root/tmp/demo.out")"

# The unit's own command lines, as the unit runs them (User=spray, RuntimeDirectory=spray).
unit="$root/usr/lib/systemd/system/spray.service"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
exec_reload=$(sed -n 's/^ExecReload=//p' "$unit")
grep -qx 'Type=notify' "$unit" || fail "spray.service is not Type=notify"
in_root install -d -o spray -g spray -m 0750 /run/spray
# shellcheck disable=SC2086 # the unit's command line, split as systemd splits it
ip netns exec "$ns" chroot --userspec=spray:spray "$root" $exec_start > "$root/tmp/run.out" 2>&1 &
pid=$!
for _ in $(seq 100); do
    [ -S "$root/run/spray/spray.sock" ] && break
    sleep 0.1
done
in_root spray ctl list > "$root/tmp/list.out" 2>&1 || { cat "$root/tmp/run.out" "$root/tmp/list.out"; fail "spray ctl list (as root, default socket)"; }
grep -q '127.0.0.1:5514' "$root/tmp/list.out" || fail "ctl list lacks the VIP: $(cat "$root/tmp/list.out")"
ok "ExecStart serves the default config; root's spray ctl list reaches it"

# shellcheck disable=SC2086
as_spray $exec_reload > /dev/null 2>&1 || fail "ExecReload of an unchanged config failed"
cp "$root/etc/spray/spray.toml" "$root/tmp/spray.toml.good"
sed -i 's/{ addr = "127.0.0.1:6515" }/{ addr = "127.0.0.1:6515", weight = 70000 }/' "$root/etc/spray/spray.toml"
# shellcheck disable=SC2086
if as_spray $exec_reload > "$root/tmp/reload.out" 2>&1; then
    fail "ExecReload reported success for a refused config"
fi
grep -q 'weight' "$root/tmp/reload.out" || fail "the refused reload does not name the bad key: $(cat "$root/tmp/reload.out")"
in_root spray ctl list | grep -q '127.0.0.1:6515' || fail "the running table changed after a refused reload"
cp "$root/tmp/spray.toml.good" "$root/etc/spray/spray.toml"
ok "ExecReload: 0 for a good config, non-zero (naming the key) for a refused one"

kill "$pid"
wait "$pid" || fail "spray run did not exit 0 on SIGTERM: $(tail -5 "$root/tmp/run.out")"
pid=""
ok "SIGTERM stops it cleanly"

systemd-analyze security --offline=yes --threshold=25 "$unit" > "$root/tmp/security.out" 2>&1 \
    || { tail -3 "$root/tmp/security.out"; fail "systemd-analyze security: exposure above 2.5"; }
ok "$(grep 'Overall exposure' "$root/tmp/security.out")"

echo "package tests passed"
