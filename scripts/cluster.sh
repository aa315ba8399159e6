#!/usr/bin/env bash
# Real-engine test bed for flocker, on loopback.
#
#   scripts/cluster.sh up | down | env | status | start-engine N
#
# Starts $ENGINES dockerd instances (each with its own managed containerd), a
# docker-registry with htpasswd auth and a redis-server, imports a tiny busybox
# image into every engine and pushes it to the registry.  Every process is
# started by this script, recorded in a pidfile under $CLUSTER_DIR and stopped
# by `down` by PID only.
#
# Environment (with defaults):
#   CLUSTER_DIR=/tmp/flk   (keep it short: unix socket paths are limited to ~100 chars)
#   ENGINES=3
#   ENGINE_PORT_BASE=2401  (engine i listens on 127.0.0.1:$((ENGINE_PORT_BASE+i-1)))
#   REGISTRY_PORT=5000
#   REDIS_PORT=6399
#   DOCKER_CLI=/usr/bin/docker (the 20.10 client shipped with docker.io)
set -euo pipefail

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/flk}
ENGINES=${ENGINES:-3}
ENGINE_PORT_BASE=${ENGINE_PORT_BASE:-2401}
REGISTRY_PORT=${REGISTRY_PORT:-5000}
REDIS_PORT=${REDIS_PORT:-6399}
REGISTRY_USER=flocker
REGISTRY_PASS=flockerpass
IMAGE=flocker-busybox:latest
PRIVATE_IMAGE=127.0.0.1:$REGISTRY_PORT/flocker/busybox:latest
PING_TIMEOUT=${PING_TIMEOUT:-90}

if [[ -z ${DOCKER_CLI:-} ]]; then
  if [[ -x /usr/bin/docker ]]; then DOCKER_CLI=/usr/bin/docker; else DOCKER_CLI=$(command -v docker || true); fi
fi

# Refuse dangerous directories: `down` does rm -rf on it.
case "$CLUSTER_DIR" in
  /*) ;;
  *) echo "cluster.sh: CLUSTER_DIR must be an absolute path (got '$CLUSTER_DIR')" >&2; exit 2 ;;
esac
CLUSTER_DIR=${CLUSTER_DIR%/}
if [[ -z $CLUSTER_DIR || $CLUSTER_DIR == / || $(tr -cd / <<<"$CLUSTER_DIR" | wc -c) -lt 2 && $CLUSTER_DIR != /tmp/* ]]; then
  echo "cluster.sh: refusing CLUSTER_DIR='$CLUSTER_DIR' (too close to /)" >&2; exit 2
fi
if (( ${#CLUSTER_DIR} > 60 )); then
  echo "cluster.sh: CLUSTER_DIR '$CLUSTER_DIR' is too long for unix socket paths (keep it <= 60 chars)" >&2; exit 2
fi

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

engine_dir() { echo "$CLUSTER_DIR/e$1"; }
engine_port() { echo $((ENGINE_PORT_BASE + $1 - 1)); }
engine_sock() { echo "$(engine_dir "$1")/s"; }
dk() { local i=$1; shift; DOCKER_CONFIG="$CLUSTER_DIR/dcfg" "$DOCKER_CLI" -H "unix://$(engine_sock "$i")" "$@"; }

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
read_pid() { [[ -s $1 ]] && tr -dc 0-9 <"$1" || true; }

# /proc/PID/cmdline contains $2?
pid_cmd_has() { [[ -r /proc/$1/cmdline ]] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"; }

engine_ping() { curl -fsS --max-time 3 --unix-socket "$(engine_sock "$1")" http://localhost/_ping >/dev/null 2>&1; }
registry_ping() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null || true)
  [[ $code == 401 || $code == 200 ]]
}
redis_ping() {
  local reply
  reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" && printf 'PING\r\n' >&3 && timeout 3 head -c 7 <&3) 2>/dev/null || true)
  [[ $reply == "+PONG"* ]]
}
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

all_up() {
  [[ -f $CLUSTER_DIR/env ]] || return 1
  local i
  for ((i = 1; i <= ENGINES; i++)); do
    pid_alive "$(read_pid "$(engine_dir "$i")/pid")" && engine_ping "$i" || return 1
  done
  pid_alive "$(read_pid "$CLUSTER_DIR/reg/pid")" && registry_ping || return 1
  pid_alive "$(read_pid "$CLUSTER_DIR/redis/pid")" && redis_ping || return 1
}

anything_recorded() {
  [[ -d $CLUSTER_DIR ]] || return 1
  local f
  for f in "$CLUSTER_DIR"/e*/pid "$CLUSTER_DIR"/e*/launcher.pid "$CLUSTER_DIR"/reg/pid "$CLUSTER_DIR"/redis/pid; do
    [[ -e $f ]] && return 0
  done
  return 1
}

write_env() {
  local i hosts=() socks=()
  for ((i = 1; i <= ENGINES; i++)); do
    hosts+=("127.0.0.1:$(engine_port "$i")")
    socks+=("unix://$(engine_sock "$i")")
  done
  local IFS=,
  cat >"$CLUSTER_DIR/env.tmp" <<EOF
export FLOCKER_TEST_HOSTS=${hosts[*]}
export FLOCKER_TEST_SOCKETS=${socks[*]}
export FLOCKER_TEST_REGISTRY=127.0.0.1:$REGISTRY_PORT
export FLOCKER_TEST_REGISTRY_USER=$REGISTRY_USER
export FLOCKER_TEST_REGISTRY_PASS=$REGISTRY_PASS
export FLOCKER_TEST_REDIS=redis://127.0.0.1:$REDIS_PORT
export FLOCKER_TEST_IMAGE=$IMAGE
export FLOCKER_TEST_PRIVATE_IMAGE=$PRIVATE_IMAGE
export FLOCKER_TEST_DIR=$CLUSTER_DIR
EOF
  mv "$CLUSTER_DIR/env.tmp" "$CLUSTER_DIR/env"
}

# ---------------------------------------------------------------- start pieces

start_engine() {
  local i=$1 d port labels
  d=$(engine_dir "$i"); port=$(engine_port "$i")
  mkdir -p "$d/data" "$d/x"
  # Own daemon config so a system /etc/docker/daemon.json cannot leak in.
  # deprecated-key-path: dockerd 20.10 otherwise keeps its identity key in
  # /etc/docker/key.json, which would give every engine the same engine ID.
  # (Only settable via the config file in Debian's build; newer dockerd
  # ignores the key.)
  printf '{"deprecated-key-path": "%s"}\n' "$d/key.json" >"$d/daemon.json"
  labels=(--label "flocker.test.index=$i")
  if ((i == 1)); then labels+=(--label storage=ssd); else labels+=(--label storage=hdd); fi
  setsid dockerd \
    --config-file "$d/daemon.json" \
    --data-root "$d/data" --exec-root "$d/x" --pidfile "$d/pid" \
    -H "unix://$d/s" -H "tcp://127.0.0.1:$port" \
    --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs \
    --insecure-registry "127.0.0.1:$REGISTRY_PORT" \
    "${labels[@]}" \
    </dev/null >"$d/log" 2>&1 9>&- &
  echo $! >"$d/launcher.pid"
}

start_registry() {
  local r=$CLUSTER_DIR/reg
  mkdir -p "$r/data"
  htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASS" >"$r/htpasswd"
  cat >"$r/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $r/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  secret: flocker-test-secret
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: flocker-registry
    path: $r/htpasswd
EOF
  setsid /usr/bin/docker-registry serve "$r/config.yml" </dev/null >"$r/log" 2>&1 9>&- &
  echo $! >"$r/pid"
}

start_redis() {
  local r=$CLUSTER_DIR/redis
  mkdir -p "$r"
  # redis writes the pidfile itself too, but we record $! first so `down` can
  # always find it.
  setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize no --dir "$r" --pidfile "$r/redis.pid" --logfile '' \
    </dev/null >"$r/log" 2>&1 9>&- &
  echo $! >"$r/pid"
}

build_rootfs_tar() {
  local root=$CLUSTER_DIR/img/rootfs tarf=$CLUSTER_DIR/img/busybox.tar bb=/bin/busybox
  [[ -x $bb ]] || bb=/usr/bin/busybox
  [[ -x $bb ]] || die "busybox not found (install busybox-static)"
  rm -rf "$root"; mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,var/tmp,proc,sys,dev}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  cp "$bb" "$root/bin/busybox"
  local app
  while read -r app; do
    [[ -z $app || $app == bin/busybox || $app != */* ]] && continue
    [[ -e $root/$app || -L $root/$app ]] || ln -s /bin/busybox "$root/$app"
  done < <("$bb" --list-full)
  # Make sure the core applets are in /bin whatever the busybox layout is.
  for app in sh cat echo sleep ls true false env; do
    [[ -e $root/bin/$app || -L $root/bin/$app ]] || ln -s busybox "$root/bin/$app"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nnobody:x:65534:\n' >"$root/etc/group"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$root" -cf "$tarf" .
  echo "$tarf"
}

wait_all() {
  local deadline=$((SECONDS + PING_TIMEOUT)) i pending
  while :; do
    pending=()
    for ((i = 1; i <= ENGINES; i++)); do
      engine_ping "$i" || pending+=("e$i")
    done
    registry_ping || pending+=(registry)
    redis_ping || pending+=(redis)
    ((${#pending[@]} == 0)) && return 0
    # Fail fast if a process died.
    for ((i = 1; i <= ENGINES; i++)); do
      if ! pid_alive "$(read_pid "$(engine_dir "$i")/launcher.pid")" && ! engine_ping "$i"; then
        show_failure "engine e$i (dockerd) exited during startup" "$(engine_dir "$i")/log"
      fi
    done
    pid_alive "$(read_pid "$CLUSTER_DIR/reg/pid")" || show_failure "docker-registry exited during startup" "$CLUSTER_DIR/reg/log"
    pid_alive "$(read_pid "$CLUSTER_DIR/redis/pid")" || show_failure "redis-server exited during startup" "$CLUSTER_DIR/redis/log"
    if ((SECONDS >= deadline)); then
      local p msg="timed out after ${PING_TIMEOUT}s waiting for: ${pending[*]}"
      for p in "${pending[@]}"; do
        case $p in
          e*) echo "---- tail of $CLUSTER_DIR/$p/log" >&2; tail -n 30 "$CLUSTER_DIR/$p/log" >&2 || true ;;
          registry) echo "---- tail of $CLUSTER_DIR/reg/log" >&2; tail -n 30 "$CLUSTER_DIR/reg/log" >&2 || true ;;
          redis) echo "---- tail of $CLUSTER_DIR/redis/log" >&2; tail -n 30 "$CLUSTER_DIR/redis/log" >&2 || true ;;
        esac
      done
      cleanup_failed_up "$msg"
    fi
    sleep 0.3
  done
}

show_failure() {
  echo "---- tail of $2" >&2
  tail -n 40 "$2" >&2 || true
  cleanup_failed_up "$1"
}

cleanup_failed_up() {
  log "up failed: $1; tearing down (set KEEP_ON_FAILURE=1 to keep $CLUSTER_DIR)"
  if [[ ${KEEP_ON_FAILURE:-0} != 1 ]]; then cmd_down || true; fi
  die "$1"
}

cmd_up() {
  local t0=$SECONDS t1 i
  if all_up; then
    log "cluster already up in $CLUSTER_DIR"
    cat "$CLUSTER_DIR/env"
    return 0
  fi
  if anything_recorded; then
    log "found a partial/stale cluster in $CLUSTER_DIR; tearing it down first"
    cmd_down
  fi

  [[ -n $DOCKER_CLI && -x $DOCKER_CLI ]] || die "docker CLI not found (install docker.io)"
  local b
  for b in dockerd containerd runc curl htpasswd redis-server setsid tar; do
    command -v "$b" >/dev/null || die "missing required binary: $b"
  done
  [[ -x /usr/bin/docker-registry ]] || die "/usr/bin/docker-registry not found (install docker-registry)"
  for ((i = 1; i <= ENGINES; i++)); do
    port_busy "$(engine_port "$i")" && die "port 127.0.0.1:$(engine_port "$i") is already in use"
  done
  port_busy "$REGISTRY_PORT" && die "port 127.0.0.1:$REGISTRY_PORT (registry) is already in use"
  port_busy "$REDIS_PORT" && die "port 127.0.0.1:$REDIS_PORT (redis) is already in use"

  rm -rf "$CLUSTER_DIR"
  mkdir -p "$CLUSTER_DIR/dcfg" "$CLUSTER_DIR/img"
  chmod 700 "$CLUSTER_DIR/dcfg"
  echo '{}' >"$CLUSTER_DIR/dcfg/config.json"

  log "starting $ENGINES engines, registry :$REGISTRY_PORT, redis :$REDIS_PORT in $CLUSTER_DIR"
  for ((i = 1; i <= ENGINES; i++)); do start_engine "$i"; done
  start_registry
  start_redis
  local tarf
  tarf=$(build_rootfs_tar)
  wait_all
  t1=$SECONDS
  log "all daemons answer after $((t1 - t0))s"

  # The image: import once on engine 1, then save|load into the others so the
  # image ID is identical everywhere.
  dk 1 import \
    --change 'CMD ["sh"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --message 'flocker test busybox' \
    "$tarf" "$IMAGE" >/dev/null || cleanup_failed_up "docker import failed"
  if ((ENGINES > 1)); then
    local saved=$CLUSTER_DIR/img/image.tar pids=()
    dk 1 save -o "$saved" "$IMAGE" || cleanup_failed_up "docker save failed"
    for ((i = 2; i <= ENGINES; i++)); do
      dk "$i" load -q -i "$saved" >/dev/null &
      pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || cleanup_failed_up "docker load failed"; done
  fi

  # Push to the private registry from engine 1 only.
  printf '%s' "$REGISTRY_PASS" | dk 1 login "127.0.0.1:$REGISTRY_PORT" -u "$REGISTRY_USER" --password-stdin >/dev/null 2>&1 \
    || cleanup_failed_up "docker login to 127.0.0.1:$REGISTRY_PORT failed (see $CLUSTER_DIR/reg/log)"
  dk 1 tag "$IMAGE" "$PRIVATE_IMAGE" || cleanup_failed_up "docker tag failed"
  dk 1 push -q "$PRIVATE_IMAGE" >/dev/null || cleanup_failed_up "docker push $PRIVATE_IMAGE failed"
  dk 1 logout "127.0.0.1:$REGISTRY_PORT" >/dev/null 2>&1 || true

  # Verify the image layout: IMAGE everywhere (same ID), PRIVATE_IMAGE only on e1.
  local id1 id
  id1=$(dk 1 image inspect -f '{{.Id}}' "$IMAGE")
  for ((i = 1; i <= ENGINES; i++)); do
    id=$(dk "$i" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null) || cleanup_failed_up "engine e$i lacks $IMAGE"
    [[ $id == "$id1" ]] || log "warning: $IMAGE has id $id on e$i but $id1 on e1"
    if ((i > 1)) && dk "$i" image inspect "$PRIVATE_IMAGE" >/dev/null 2>&1; then
      dk "$i" rmi "$PRIVATE_IMAGE" >/dev/null
    fi
  done
  dk 1 image inspect "$PRIVATE_IMAGE" >/dev/null 2>&1 || cleanup_failed_up "engine e1 lacks $PRIVATE_IMAGE"

  write_env
  # start-engine must reuse these, whatever the caller's environment says.
  printf 'ENGINE_PORT_BASE=%s\nREGISTRY_PORT=%s\nREDIS_PORT=%s\n' "$ENGINE_PORT_BASE" "$REGISTRY_PORT" "$REDIS_PORT" >"$CLUSTER_DIR/ports"
  rm -rf "$CLUSTER_DIR/img/rootfs" "$CLUSTER_DIR/img/image.tar"
  log "cluster up in $((SECONDS - t0))s (daemons ready $((t1 - t0))s, image setup $((SECONDS - t1))s)"
  cat "$CLUSTER_DIR/env"
}

# ---------------------------------------------------------------- stop

# Wait until none of the given pids is alive, up to $1 seconds.
wait_pids() {
  local timeout=$1; shift
  local deadline=$((SECONDS + timeout)) p alive
  while :; do
    alive=()
    for p in "$@"; do pid_alive "$p" && alive+=("$p"); done
    ((${#alive[@]} == 0)) && return 0
    ((SECONDS >= deadline)) && { echo "${alive[@]}"; return 1; }
    sleep 0.2
  done
}

# Stop pids (TERM, wait, KILL).
stop_pids() {
  local timeout=$1 what=$2; shift 2
  local p left
  (($# == 0)) && return 0
  for p in "$@"; do kill -TERM "$p" 2>/dev/null || true; done
  if ! left=$(wait_pids "$timeout" "$@"); then
    log "$what did not stop within ${timeout}s; SIGKILL $left"
    for p in $left; do kill -KILL "$p" 2>/dev/null || true; done
    wait_pids 5 $left >/dev/null || log "warning: could not kill $left"
  fi
}

# Direct children of a pid.
children_of() {
  awk -v p="$1" '{ sub(/^.*\) /, ""); if ($2 == p) { split(FILENAME, a, "/"); print a[3] } }' /proc/[0-9]*/stat 2>/dev/null || true
}

descendants_of() {
  local p c
  for c in $(children_of "$1"); do echo "$c"; descendants_of "$c"; done
  true
}

# Processes whose command line mentions CLUSTER_DIR (leftover containerd /
# containerd-shim started by our dockerds).
leftover_pids() {
  local f p comm
  for f in /proc/[0-9]*/cmdline; do
    p=${f#/proc/}; p=${p%/cmdline}
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    case $comm in
      containerd | containerd-shim* | dockerd | docker-registry | redis-server | runc) ;;
      *) continue ;;
    esac
    tr '\0' '\n' <"$f" 2>/dev/null | grep -qF -- "$CLUSTER_DIR/" && echo "$p"
  done
  true
}

unmount_all() {
  local m n=0
  # deepest first
  while read -r m; do
    m=$(printf '%b' "$m")   # /proc/mounts escapes spaces as \040
    umount -l "$m" 2>/dev/null && n=$((n + 1)) || true
  done < <(awk -v d="$CLUSTER_DIR" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/mounts | sort -r)
  ((n > 0)) && log "unmounted $n mount(s) under $CLUSTER_DIR"
  true
}

cmd_down() {
  local t0=$SECONDS i d p pids=() extra
  if [[ ! -d $CLUSTER_DIR ]]; then
    log "nothing to do: $CLUSTER_DIR does not exist"
    return 0
  fi
  # Remove containers first (fast SIGKILL) so dockerd does not spend its
  # per-container stop timeout during shutdown.
  local rmpids=()
  for ((i = 1; i <= ENGINES; i++)); do
    if engine_ping "$i"; then
      (
        ids=$(timeout 10 "$DOCKER_CLI" -H "unix://$(engine_sock "$i")" ps -aq 2>/dev/null || true)
        [[ -n $ids ]] && timeout 30 "$DOCKER_CLI" -H "unix://$(engine_sock "$i")" rm -f $ids >/dev/null 2>&1
        true
      ) &
      rmpids+=($!)
    fi
  done
  # (wait only for these: a bare `wait` would also wait for daemons started
  # by this shell when called from a failed `up`)
  for p in "${rmpids[@]}"; do wait "$p" || true; done
  # dockerd: SIGTERM all in parallel, wait up to 20s, then SIGKILL.
  for d in "$CLUSTER_DIR"/e*; do
    [[ -d $d ]] || continue
    for p in "$(read_pid "$d/pid")" "$(read_pid "$d/launcher.pid")"; do
      if pid_alive "$p" && pid_cmd_has "$p" "$d"; then
        [[ " ${pids[*]} " == *" $p "* ]] || pids+=("$p")
      fi
    done
  done
  ((${#pids[@]})) && log "stopping dockerd pids ${pids[*]}"
  stop_pids 20 dockerd "${pids[@]}"

  pids=()
  p=$(read_pid "$CLUSTER_DIR/reg/pid"); pid_alive "$p" && pid_cmd_has "$p" "$CLUSTER_DIR" && pids+=("$p")
  p=$(read_pid "$CLUSTER_DIR/redis/pid"); pid_alive "$p" && pid_cmd_has "$p" redis-server && pids+=("$p")
  ((${#pids[@]})) && log "stopping registry/redis pids ${pids[*]}"
  stop_pids 5 registry/redis "${pids[@]}"

  # Leftover containerd / containerd-shim referencing CLUSTER_DIR (plus
  # whatever container processes still hang below a shim).
  extra=$(leftover_pids)
  if [[ -n $extra ]]; then
    local all=() c cids=() cid
    for p in $extra; do
      all+=("$p")
      for c in $(descendants_of "$p"); do all+=("$c"); done
      # container id of a shim (`containerd-shim-runc-v2 ... -id ID ...`)
      cid=$(tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | awk 'prev == "-id" { print; exit } { prev = $0 }' || true)
      [[ $cid =~ ^[0-9a-f]{64}$ ]] && cids+=("$cid")
    done
    log "killing leftover processes referencing $CLUSTER_DIR: ${all[*]}"
    for p in "${all[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    wait_pids 5 "${all[@]}" >/dev/null || log "warning: some leftover processes survived"
    # Their (now empty) container cgroups were never cleaned up by runc.
    for cid in "${cids[@]}"; do
      for c in /sys/fs/cgroup/*/docker/"$cid" /sys/fs/cgroup/docker/"$cid" /sys/fs/cgroup/system.slice/docker-"$cid".scope; do
        [[ -d $c ]] && rmdir "$c" 2>/dev/null || true
      done
    done
  fi

  unmount_all
  rm -rf "$CLUSTER_DIR" 2>/dev/null || { sleep 1; unmount_all; rm -rf "$CLUSTER_DIR"; }
  log "cluster down ($((SECONDS - t0))s)"
}

cmd_status() {
  local i p rc=0
  if [[ ! -d $CLUSTER_DIR ]]; then echo "cluster: down ($CLUSTER_DIR does not exist)"; return 1; fi
  for ((i = 1; i <= ENGINES; i++)); do
    p=$(read_pid "$(engine_dir "$i")/pid")
    if pid_alive "$p" && engine_ping "$i"; then
      echo "e$i: up   pid=$p tcp://127.0.0.1:$(engine_port "$i") unix://$(engine_sock "$i")"
    else
      echo "e$i: DOWN pid=${p:-?}"; rc=1
    fi
  done
  p=$(read_pid "$CLUSTER_DIR/reg/pid")
  if pid_alive "$p" && registry_ping; then echo "registry: up   pid=$p 127.0.0.1:$REGISTRY_PORT"; else echo "registry: DOWN"; rc=1; fi
  p=$(read_pid "$CLUSTER_DIR/redis/pid")
  if pid_alive "$p" && redis_ping; then echo "redis: up   pid=$p 127.0.0.1:$REDIS_PORT"; else echo "redis: DOWN"; rc=1; fi
  return $rc
}

cmd_env() {
  [[ -f $CLUSTER_DIR/env ]] || die "no env file at $CLUSTER_DIR/env (run: scripts/cluster.sh up)"
  cat "$CLUSTER_DIR/env"
}

# Serialise up/down/status for the same CLUSTER_DIR.
with_lock() {
  exec 9>"$CLUSTER_DIR.lock"
  if ! flock -w 180 9; then die "could not lock $CLUSTER_DIR.lock"; fi
  "$@"
}

# Start engine N again after a test killed it (same flags, same data), and wait for it to answer.
cmd_start_engine() {
  local i=${1:?engine number} deadline=$((SECONDS + PING_TIMEOUT))
  # shellcheck disable=SC1091
  [[ -f $CLUSTER_DIR/ports ]] && source "$CLUSTER_DIR/ports"
  engine_ping "$i" && return 0
  start_engine "$i"
  until engine_ping "$i"; do
    if ((SECONDS >= deadline)); then tail -n 30 "$(engine_dir "$i")/log" >&2; die "engine e$i did not come back"; fi
    sleep 0.3
  done
}

case ${1:-} in
  start-engine) cmd_start_engine "${2:-}" ;;
  up) with_lock cmd_up ;;
  # The lock file goes too once the bed is down (nothing of the bed stays in /tmp).
  down) with_lock cmd_down && rm -f "$CLUSTER_DIR.lock" ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) echo "usage: $0 up|down|env|status|start-engine N" >&2; exit 2 ;;
esac
