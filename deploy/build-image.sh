#!/usr/bin/env bash
# Builds the local test/demo image berth-busybox:2 FROM scratch with Debian's
# static busybox and a static UDP echo server (there is no registry here). Usage: deploy/build-image.sh [DOCKER_HOST]
set -euo pipefail
IMAGE=berth-busybox:2
BUSYBOX=/bin/busybox
if [ -n "${1:-}" ]; then export DOCKER_HOST="$1"; fi
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q "statically linked" && ! ldd "$BUSYBOX" 2>&1 | grep -q "not a dynamic"; then
  echo "error: $BUSYBOX is not static; apt-get install busybox-static" >&2
  exit 1
fi
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
cp "$BUSYBOX" "$context/busybox"
# A UDP echo server for the UDP service tests (busybox has none).
gcc -static -O2 -o "$context/udp-echo" "$(dirname "$0")/images/udp-echo.c"
cat > "$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
COPY udp-echo /bin/udp-echo
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$context" >/dev/null
echo "built $IMAGE"
