#!/usr/bin/env bash
# Builds the Pilotfish image offline, as CI does: no registry is needed.
#
#   scripts/build-image.sh                  # tags pilotfish:latest
#   IMAGE=pilotfish:test scripts/build-image.sh
#   PILOTFISH_BIN=target/release/pilotfish scripts/build-image.sh   # skip the dist build
#
# Online, `docker build -f deploy/docker/Dockerfile -t pilotfish .` builds
# the same image from the Rust image instead. Offline there is no image to
# start from, so this makes one from Debian's packages once
# (`debootstrap --variant=minbase bookworm`, imported as
# pilotfish-builder:bookworm, about 120 MB, kept for the next build; remove
# it with `docker rmi pilotfish-builder:bookworm`), builds the binary on the
# host with cargo, and hands both to the same Dockerfile as build arguments.
# The build stage is Debian bookworm either way, so the shared libraries
# copied into the image are the ones the binary was linked against.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${IMAGE:-pilotfish:latest}
builder=${BUILDER_IMAGE:-pilotfish-builder:bookworm}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

docker info >/dev/null 2>&1 || {
    echo "build-image.sh: no Docker daemon answers (is it running, may this user use it?)" >&2
    exit 1
}

if ! docker image inspect "$builder" >/dev/null 2>&1; then
    if ! command -v debootstrap >/dev/null; then
        echo "installing debootstrap" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends debootstrap
    fi
    rootfs=$(mktemp -d)
    trap '$sudo rm -rf "$rootfs"' EXIT
    echo "making $builder from Debian's packages (debootstrap, once)" >&2
    $sudo debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >/dev/null
    $sudo tar -C "$rootfs" -c . | docker import - "$builder" >/dev/null
fi

if [ -n "${PILOTFISH_BIN:-}" ]; then
    binary=$PILOTFISH_BIN
else
    cargo build --profile dist --locked
    binary=target/dist/pilotfish
fi
# The one file of target/ the build context takes (.dockerignore), stripped
# here since the minimal base has no binutils.
mkdir -p target/image
cp "$binary" target/image/pilotfish
strip target/image/pilotfish

docker build -q -f deploy/docker/Dockerfile \
    --build-arg "BUILDER=$builder" \
    --build-arg PREBUILT=target/image/pilotfish \
    -t "$image" . >/dev/null
# The build stage's image, left untagged by the legacy builder.
docker image prune -f --filter label=io.pilotfish.stage=build >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "built $image: $((size / 1024 / 1024)) MiB ($size bytes)"
