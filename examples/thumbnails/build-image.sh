#!/usr/bin/env bash
# Builds the thumbnail program as a static binary and imports it as the Docker image
# barge-examples/thumbnail:latest (no registry needed: the image is made on this host).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
IMAGE="${IMAGE:-barge-examples/thumbnail:latest}"

RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu
binary=target/x86_64-unknown-linux-gnu/release/barge-example-thumbnail

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/input" "$rootfs/output" "$rootfs/tmp"
cp "$binary" "$rootfs/thumbnail"
tar -C "$rootfs" -c . | docker import --change 'ENTRYPOINT ["/thumbnail"]' - "$IMAGE" >/dev/null
echo "built $IMAGE (the program alone: $(du -h "$binary" | cut -f1))"
echo "$binary"
