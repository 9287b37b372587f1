#!/usr/bin/env bash
# Makes sure a Redis answers on 127.0.0.1:${REDIS_PORT:-6379}: installs redis-server from Debian and
# starts it (no persistence) when nothing answers. Leaves a running Redis alone.
set -euo pipefail
port="${REDIS_PORT:-6379}"

redis_answers() {
  # Plain bash, so it works before redis-cli is installed.
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  local reply; IFS= read -r -t 2 reply <&3 || true
  exec 3>&-
  [[ "$reply" == "+PONG"* ]]
}

if redis_answers; then exit 0; fi
if ! command -v redis-server >/dev/null; then
  echo "installing redis-server" >&2
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
  --logfile "/tmp/hotserve-redis-$port.log" --pidfile "/tmp/hotserve-redis-$port.pid"
for _ in $(seq 50); do redis_answers && exit 0; sleep 0.1; done
echo "Redis did not answer on 127.0.0.1:$port (see /tmp/hotserve-redis-$port.log)" >&2
exit 1
