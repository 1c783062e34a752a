#!/usr/bin/env bash
# Builds Hearth's OCI image from deploy/Containerfile with buildah: no daemon, no base image, no registry.
# The image's root file system is staged here from this machine: the release `hearth` binary, the Debian
# shared libraries it links (found with ldd), SoftHSM2's PKCS#11 module with its libraries when Debian's
# softhsm2 package is installed, and /etc/passwd and /etc/group naming the hearth user (10001).
#
# Usage: scripts/build-image.sh [--binary PATH] [--tag NAME] [--archive FILE] [-- BUILDAH_GLOBAL_OPTIONS...]
#   --binary   the hearth binary to put in (default: `cargo build --release`, then target/release/hearth)
#   --tag      the image name (default: localhost/hearth:VERSION)
#   --archive  also write the image as an OCI archive, to copy to a machine or load into a registry:
#              `skopeo copy oci-archive:FILE docker://REGISTRY/hearth:VERSION`
#   after `--`: buildah's global options, e.g. `--root DIR --runroot DIR` for a separate image store, or
#              `--storage-driver vfs` where the kernel refuses overlay mounts.
# buildah is installed from Debian when missing. Prints the image id on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
binary="" tag="" archive=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --archive) archive=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "build-image.sh: unknown option $1 (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
done
global=("$@")
if ! command -v buildah >/dev/null 2>&1; then
  echo "installing buildah (builds the image without a daemon)" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi
if [ -z "$binary" ]; then
  cargo build --release --bin hearth >&2
  binary="${CARGO_TARGET_DIR:-target}/release/hearth"
fi
[ -x "$binary" ] || { echo "build-image.sh: no executable hearth binary at $binary" >&2; exit 1; }
version=$("$binary" --version | awk '{print $2}')
tag=${tag:-localhost/hearth:$version}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/hearth" "$root/var/lib/hearth" "$root/tmp"
install -m 0755 "$binary" "$root/usr/local/bin/hearth"
# Each shared library a program links, at the path the dynamic loader looks for it.
copy_libs() {
  ldd "$1" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
copy_libs "$binary"
module=/usr/lib/softhsm/libsofthsm2.so
if [ -e "$module" ]; then
  mkdir -p "$root/usr/lib/softhsm" "$root/etc/softhsm" "$root/var/lib/hearth/softhsm"
  cp -L "$module" "$root$module"
  copy_libs "$module"
  # SoftHSM2 reads its configuration from $SOFTHSM2_CONF; tokens belong on the state volume.
  printf 'directories.tokendir = /var/lib/hearth/softhsm\nobjectstore.backend = file\nlog.level = ERROR\n' \
    >"$root/etc/softhsm/softhsm2.conf"
fi
# The system's CA bundle: the desk checks https:// webhook receivers against it unless webhook_ca_file is set.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nhearth:x:10001:10001:Hearth:/var/lib/hearth:/usr/sbin/nologin\n' \
  >"$root/etc/passwd"
printf 'root:x:0:\nhearth:x:10001:\n' >"$root/etc/group"
chmod 1777 "$root/tmp"
chown -R 10001:10001 "$root/var/lib/hearth"
cp deploy/Containerfile "$ctx/Containerfile"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
buildah "${global[@]}" build --isolation chroot --layers=false --quiet \
  --build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" \
  -t "$tag" -f "$ctx/Containerfile" "$ctx" >&2
if [ -n "$archive" ]; then
  buildah "${global[@]}" push --quiet "$tag" "oci-archive:$archive:$tag" >&2
  echo "wrote $archive" >&2
fi
buildah "${global[@]}" inspect --type image --format '{{.FromImageID}}' "$tag"
echo
