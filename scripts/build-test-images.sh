#!/usr/bin/env bash
# Builds the images the test suite runs, without any registry (none may be reachable):
#   cyclone-test/busybox:latest  a root fs of the static busybox, one symlink per applet,
#                                /etc/passwd with root, /tmp; PATH=/bin.
# Skips an image that is already there. Needs a reachable daemon (scripts/setup-docker.sh).
set -euo pipefail

image=cyclone-test/busybox:latest
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

busybox=""
for candidate in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
  # a static binary: `ldd` says "not a dynamic executable" and fails
  if [ -x "$candidate" ] && ! ldd "$candidate" >/dev/null 2>&1; then
    busybox=$candidate
    break
  fi
done
if [ -z "$busybox" ]; then
  echo "build-test-images: no static busybox found; run scripts/setup-docker.sh" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
echo 'root:x:0:' >"$root/etc/group"
tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' - "$image" >/dev/null
echo "build-test-images: built $image" >&2
