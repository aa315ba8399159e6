#!/usr/bin/env bash
# Build flocker's image (Dockerfile) on the engine at DOCKER_HOST with the classic builder, and
# print its tag on stdout (everything else goes to stderr).
#
#   scripts/image.sh [TAG]              default tag: flocker:<package.json version>
#
# No registry is needed: the two base images the Dockerfile takes as build args are made here
# with `docker import` from local files and kept on the engine under a content-hash tag:
#   BUILDER  flocker-local/builder:HASH   the npm-installed bun binary at /usr/local/bin/bun, the
#                                         glibc files `ldd` lists for it, busybox as /bin/sh, CA certs
#   BASE     flocker-local/base:HASH      the same glibc files, CA certs, /etc/passwd with nonroot
# Set BUILDER and BASE to use other images, e.g. the Dockerfile's defaults where a registry is
# reachable: BUILDER=oven/bun:1 BASE=gcr.io/distroless/cc-debian12:nonroot scripts/image.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DOCKER=${DOCKER_CLI:-$(command -v docker || true)}
[[ -n $DOCKER && -x $DOCKER ]] || { echo "image.sh: docker CLI not found" >&2; exit 1; }
export DOCKER_BUILDKIT=0 DOCKER_CLI_HINTS=false
version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' package.json | head -1)
TAG=${1:-${IMAGE_TAG:-flocker:${version:-latest}}}

log() { printf 'image.sh: %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/flocker-image.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Copy a file into a root directory at the same absolute path (symlinks resolved).
put() {
  local root=$1 file=$2 dest=${3:-$2}
  mkdir -p "$root$(dirname "$dest")"
  cp -L "$file" "$root$dest"
}

# Import a root directory as an image unless the engine already has one with that content.
import_root() {
  local root=$1 name=$2 tarf hash ref
  tarf=$work/$(basename "$root").tar
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$tarf" .
  hash=$(sha256sum "$tarf" | cut -c1-12)
  ref=$name:$hash
  if ! "$DOCKER" image inspect "$ref" >/dev/null 2>&1; then
    log "importing $ref ($(du -h "$tarf" | cut -f1))"
    "$DOCKER" import --message "flocker local base (scripts/image.sh)" "$tarf" "$ref" >/dev/null
  fi
  echo "$ref"
}

local_bases() {
  local bun lib libs=() common=$work/common
  bun=$(readlink -f node_modules/bun/bin/bun.exe 2>/dev/null || true)
  [[ -x $bun ]] || bun=$(readlink -f node_modules/.bin/bun 2>/dev/null || true)
  [[ -x $bun ]] && "$bun" --version >/dev/null 2>&1 || { echo "image.sh: no bun binary in node_modules; run 'npm ci' first" >&2; exit 1; }
  # What the dynamic loader needs: `=> /path` entries and the loader itself (no vdso).
  while read -r lib; do libs+=("$lib"); done < <(ldd "$bun" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
  ((${#libs[@]})) || { echo "image.sh: ldd listed no libraries for $bun" >&2; exit 1; }
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] || { echo "image.sh: /etc/ssl/certs/ca-certificates.crt missing (install ca-certificates)" >&2; exit 1; }

  mkdir -p "$common/etc" "$common/tmp"
  chmod 1777 "$common/tmp"
  for lib in "${libs[@]}"; do put "$common" "$lib"; done
  put "$common" /etc/ssl/certs/ca-certificates.crt
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$common/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$common/etc/group"
  mkdir -p "$common/home/nonroot" && chown 65532:65532 "$common/home/nonroot"

  cp -a "$common" "$work/base"
  cp -a "$common" "$work/builder"
  put "$work/builder" "$bun" /usr/local/bin/bun
  local bb=/bin/busybox
  [[ -x $bb ]] || bb=/usr/bin/busybox
  [[ -x $bb ]] || { echo "image.sh: busybox not found (install busybox-static): the builder's RUN needs a /bin/sh" >&2; exit 1; }
  put "$work/builder" "$bb" /bin/busybox
  ln -s busybox "$work/builder/bin/sh"

  BASE=$(import_root "$work/base" flocker-local/base)
  BUILDER=$(import_root "$work/builder" flocker-local/builder)
}

if [[ -z ${BUILDER:-} || -z ${BASE:-} ]]; then local_bases; fi
log "building $TAG on ${DOCKER_HOST:-the default engine} (BUILDER=$BUILDER BASE=$BASE)"
"$DOCKER" build --build-arg "BUILDER=$BUILDER" --build-arg "BASE=$BASE" -t "$TAG" . >&2
size=$("$DOCKER" image inspect -f '{{.Size}}' "$TAG")
log "built $TAG: $((size / 1000000)) MB ($size bytes)"
echo "$TAG"
