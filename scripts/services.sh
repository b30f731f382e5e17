#!/usr/bin/env bash
# Brings up the services the real-service tests need, and exits non-zero when one cannot be brought up
# (a test that needs a service fails without it; it never skips):
# - Kafka: the Tansu broker on 127.0.0.1:9092 (in memory; installed with `cargo install` when missing,
#   started in the background, log in $RTB_SERVICES_LOG_DIR/tansu.log);
# - Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (started with the machine's own commands).
# Called by `scripts/test.sh` (before `cargo test`) and by `.ci/run`. Idempotent: a service that answers
# is left alone.
set -euo pipefail

LOG_DIR="${RTB_SERVICES_LOG_DIR:-/tmp/rtb-services}"
mkdir -p "$LOG_DIR"
TANSU="${TANSU_BIN:-$HOME/.cargo/bin/tansu}"
KAFKA_HOST=127.0.0.1
KAFKA_PORT=9092

# Whether something accepts TCP connections on HOST PORT.
answers() {
  (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null
}

# Waits up to $3 seconds for HOST:PORT to answer.
wait_for() {
  local host=$1 port=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    answers "$host" "$port" && return 0
    sleep 0.1
  done
  return 1
}

fail() {
  echo "services.sh: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- Kafka (Tansu)
if answers "$KAFKA_HOST" "$KAFKA_PORT"; then
  echo "== kafka: a broker answers on $KAFKA_HOST:$KAFKA_PORT"
else
  if [ ! -x "$TANSU" ]; then
    echo "== kafka: installing tansu (cargo install tansu --locked; log in $LOG_DIR/tansu-install.log)"
    cargo install tansu --locked --features dynostore,postgres >"$LOG_DIR/tansu-install.log" 2>&1 \
      || fail "cargo install tansu failed; see $LOG_DIR/tansu-install.log"
  fi
  echo "== kafka: starting tansu on $KAFKA_HOST:$KAFKA_PORT (log in $LOG_DIR/tansu.log)"
  nohup "$TANSU" broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$LOG_DIR/tansu.log" 2>&1 </dev/null &
  wait_for "$KAFKA_HOST" "$KAFKA_PORT" 60 \
    || fail "tansu did not answer on $KAFKA_HOST:$KAFKA_PORT within 60 s; see $LOG_DIR/tansu.log"
  echo "== kafka: tansu answers"
fi

# ---------------------------------------------------------------- Redis
if ! answers 127.0.0.1 6379; then
  echo "== redis: starting"
  command -v redis-server >/dev/null || fail "redis-server is not installed"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || fail "redis-server could not be started"
  wait_for 127.0.0.1 6379 30 || fail "redis did not answer on 127.0.0.1:6379 within 30 s"
fi
echo "== redis: answers on 127.0.0.1:6379"

# ---------------------------------------------------------------- PostgreSQL
if ! answers 127.0.0.1 5432; then
  echo "== postgresql: starting"
  command -v pg_ctlcluster >/dev/null || fail "pg_ctlcluster is not installed"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start \
    || fail "postgresql could not be started"
  wait_for 127.0.0.1 5432 60 || fail "postgresql did not answer on 127.0.0.1:5432 within 60 s"
fi
if command -v pg_isready >/dev/null; then
  for _ in $(seq 1 100); do
    pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 && break
    sleep 0.1
  done
  pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1 || fail "postgresql on 127.0.0.1:5432 is not ready"
fi
echo "== postgresql: answers on 127.0.0.1:5432"
