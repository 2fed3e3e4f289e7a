# Sourced by scripts/profile-loopback and scripts/compare-loopback: `shoal seed` -> `shoal fetch`
# over 127.0.0.1.
#
#   loopback_setup BYTES BIN   makes a payload of BYTES random bytes, keys, a trust document and a
#                              manifest (signed with BIN) in a work directory, PROFILE_DIR or a
#                              temporary one on tmpfs removed at exit, and enters it
#   pair NAME BIN [SEED_WRAP [FETCH_WRAP]]
#                              runs BIN's seed and fetch once, each command line after its wrapper
#                              (a word list, may be empty), and prints one line: NAME, the fetch's
#                              time, throughput and CPU seconds

loopback_setup() {
  local bytes=$1 bin=$2
  if [ -n "${PROFILE_DIR:-}" ]; then
    dir=$PROFILE_DIR
    mkdir -p "$dir"
  else
    dir=$(mktemp -d /dev/shm/shoal-loopback.XXXXXX)
    trap 'kill "${seed_pid:-}" 2>/dev/null || true; rm -rf "$dir"' EXIT
  fi
  cd "$dir"
  echo "loopback: payload of $bytes bytes in $dir" >&2
  head -c "$bytes" /dev/urandom > payload
  for role in root publisher coordinator; do
    "$bin" keys generate --role "$role" --out "$role.key" >/dev/null 2>&1
  done
  "$bin" trust init --root root.key --publisher publisher.key.pub \
    --coordinator coordinator.key.pub --out trust.json >/dev/null 2>&1
  "$bin" release create payload --service profile --version 1 --key publisher.key \
    --out profile.manifest --json >/dev/null
  payload_bytes=$bytes
}

pair() {
  local name=$1 bin=$2 seed_wrap=${3:-} fetch_wrap=${4:-} start end
  rm -rf seed-data fetch-data
  mkdir fetch-data
  # shellcheck disable=SC2086 # the wrappers are word lists
  $seed_wrap "$bin" seed profile.manifest --file payload --trust trust.json \
    --data-dir seed-data --listen 127.0.0.1:7070 2>seed.log &
  seed_pid=$!
  for _ in $(seq 1 200); do
    ss -Hlun 'sport = :7070' | grep -q . && break
    sleep 0.1
  done
  start=$(date +%s.%N)
  TIMEFORMAT="%U %S"
  # shellcheck disable=SC2086
  { time $fetch_wrap "$bin" fetch profile.manifest --trust trust.json --data-dir fetch-data \
    --listen 127.0.0.1:7071 --peer 127.0.0.1:7070 --json >fetch.json 2>fetch.log; } 2>fetch.cpu
  end=$(date +%s.%N)
  kill -INT "$seed_pid"
  wait "$seed_pid" || true
  seed_pid=
  python3 -c 'import sys
b, s = int(sys.argv[2]), float(sys.argv[4]) - float(sys.argv[3])
user, system = (float(x) for x in sys.argv[5].split())
print(f"{sys.argv[1]}: fetch of {b} bytes in {s:.2f} s, {b * 8 / s / 1e9:.2f} Gbit/s, "
      f"fetch CPU {user:.2f} user + {system:.2f} system s, {b / (user + system) / 1e9:.2f} GB per CPU-second")' \
    "$name" "$payload_bytes" "$start" "$end" "$(tail -n 1 fetch.cpu)"
}
