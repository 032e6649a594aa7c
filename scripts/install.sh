#!/usr/bin/env bash
# Installs Switchboard on this Debian box and starts it on the embedded default (offline) config,
# as the unprivileged system user `switchboard` (the appliance, its Kamailio edge and its workers).
# Usage (root, Debian 12, from a clone):  scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
prefix=/opt/switchboard
etc=/etc/switchboard
var=/var/lib/switchboard
user=switchboard
# Without systemd (a container) the pid file lives where only root writes: a pid file in the
# service's own directory would let the service choose which process root signals.
pidfile=/run/switchboard.pid
# The venv and the code must be readable by the service user whatever root's umask is.
umask 022

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends kamailio python3-venv curl >/dev/null
# Debian enables its own kamailio service on install; ours runs the edge with our config.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now kamailio >/dev/null 2>&1 || true
fi

if ! getent passwd $user >/dev/null; then
  if command -v adduser >/dev/null; then
    adduser --quiet --system --group --home $var --no-create-home --shell /usr/sbin/nologin $user
  else
    useradd --system --user-group --home-dir $var --no-create-home --shell /usr/sbin/nologin $user
  fi
fi

# Debian's python, not whatever `python3` is first on root's PATH: a venv is a link to its base
# interpreter, and one under /root (pyenv) is out of the service user's reach. A venv that
# user cannot run (an earlier install's) is made again.
python=${PYTHON:-/usr/bin/python3}
if ! (cd / && setpriv --reuid=$user --regid=$user --init-groups -- env -i $prefix/venv/bin/python -c '') 2>/dev/null; then
  rm -rf $prefix/venv
  "$python" -m venv $prefix/venv
fi
$prefix/venv/bin/pip install -q --upgrade pip >/dev/null
$prefix/venv/bin/pip install -q "$src"
# Owned by root, readable by all, writable by none: the service can run it but not change it.
chown -R root:root $prefix
chmod -R u+rwX,go+rX,go-w $prefix
ln -sf $prefix/venv/bin/appliance /usr/local/bin/appliance

# Config and flows: root's to change, the group's to read, nobody else's (API secrets may go here).
install -d -m 0750 -o root -g $user $etc
[ -d $etc/flows ] || cp -r "$src/flows" $etc/flows
if [ ! -f $etc/appliance.yaml ]; then
  cat > $etc/appliance.yaml <<YAML
# Switchboard configuration; every key and its default: docs/CONFIG.md
data_dir: $var
recordings_dir: $var/recordings
flows_dir: $etc/flows
YAML
fi
chown root:$user $etc/appliance.yaml
chmod 0640 $etc/appliance.yaml
chown -R root:$user $etc/flows
chmod -R u=rwX,g=rX,o= $etc/flows

# Data and recordings: the service's own, closed to other users. An earlier install ran the
# appliance as root with umask 022: take its files over and close them too.
install -d -m 0750 -o $user -g $user $var $var/recordings
chown -R $user:$user $var
chmod -R o-rwx $var

# From the config as the appliance reads it (defaults included): the lowest port it binds,
# where its health check answers and its SIP port.
settings=$(cd / && $prefix/venv/bin/python - $etc/appliance.yaml <<'PY'
import sys
from pathlib import Path

from appliance.config import Config

config = Config.load(Path(sys.argv[1]))
sip, http = config.sip, config.http
host = f"[{http.host}]" if ":" in http.host else http.host
console = config.console
# The console answers on every address unless the admin named one; then the URL names it too.
console_host = "-" if console.host in ("0.0.0.0", "::", "") else console.host
print(min(sip.port, http.port, sip.worker_base_port, sip.rtp_port_start, console.port),
      f"http://{host}:{http.port}/healthz", sip.port, console.port, console_host)
for name, path in (("data_dir", config.data_dir), ("recordings_dir", config.recordings_dir)):
    if not path.is_relative_to("/var/lib/switchboard"):
        print(f"install.sh: {name} {path} is outside /var/lib/switchboard: make it writable by "
              "the switchboard user (and add ReadWritePaths= for it in a drop-in)", file=sys.stderr)
PY
)
read -r lowest health sip_port console_port console_host <<<"$settings"
lowport=no
if [ "$lowest" -lt 1024 ]; then lowport=yes; fi

if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  install -m 644 "$src/systemd/switchboard.service" /etc/systemd/system/switchboard.service
  # Binding a port below 1024 is the one capability the appliance may need, and only then.
  dropin=/etc/systemd/system/switchboard.service.d/lowport.conf
  if [ $lowport = yes ]; then
    install -D -m 644 "$src/systemd/switchboard-lowport.conf" $dropin
  else
    rm -f $dropin
  fi
  systemctl daemon-reload
  systemctl enable --now switchboard.service
  systemctl restart switchboard.service
else
  # No systemd (a container): run it in the background as $user, logs in $var/appliance.log.
  stop() {  # the pid in $1 if it is an appliance; wait as long as the unit's TimeoutStopSec
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    if [[ $pid =~ ^[0-9]+$ ]] && ps -o args= -p "$pid" 2>/dev/null | grep -q 'appliance.*run'; then
      kill "$pid"
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    fi
    rm -f "$1"
  }
  stop $pidfile
  # An earlier install kept its pid file here; it ran the appliance as root.
  [ -L $var/appliance.pid ] || stop $var/appliance.pid
  caps=(--inh-caps=-all --bounding-set=-all)
  if [ $lowport = yes ]; then
    caps=(--inh-caps=+net_bind_service --ambient-caps=+net_bind_service "--bounding-set=-all,+net_bind_service")
  fi
  # setpriv execs (so $! is the appliance itself), with the environment and limits of the unit;
  # the log is opened by the appliance's user, never by root in the service's directory.
  (
    cd $var
    umask 0027
    ulimit -n 65536 2>/dev/null || true
    exec setpriv --reuid=$user --regid=$user --init-groups --no-new-privs "${caps[@]}" -- \
      env -i HOME=$var USER=$user LOGNAME=$user LANG=C.UTF-8 PYTHONUNBUFFERED=1 \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      sh -c 'exec "$@" >> appliance.log 2>&1' sh \
      $prefix/venv/bin/appliance --config $etc/appliance.yaml run
  ) </dev/null &
  echo $! > $pidfile
fi

healthy=no
for _ in $(seq 1 30); do
  if curl -fsS "$health" >/dev/null 2>&1; then healthy=yes; break; fi
  sleep 1
done
if [ $healthy = no ]; then
  echo "install.sh: the appliance did not answer $health with 200 in 30 s" >&2
  curl -sS "$health" >&2 || true  # a 503 says which workers are missing, or that the edge is down
  echo >&2
  if [ -f $pidfile ]; then tail -n 30 $var/appliance.log >&2; else journalctl -u switchboard.service -n 30 --no-pager >&2; fi
  exit 1
fi
host=$(hostname -I 2>/dev/null | awk '{print $1}')
echo
echo "Switchboard is running as user $user. Call it from a SIP softphone or sipp on your LAN:"
echo "    sip:100@${host:-<this-host>}:$sip_port"
echo "Recent calls:   appliance --config $etc/appliance.yaml calls"
echo "Config:         $etc/appliance.yaml   Flows: $etc/flows/"
echo
# As the service user with the unit's config: the certificate the running console serves
# (made now if it has not made it yet), in the service's own data_dir, never a root-owned one.
if [ "$console_host" = - ]; then console_host=${host:-<this-host>}; fi
if [[ $console_host == *:* ]]; then console_host="[$console_host]"; fi
echo "Operator console: https://$console_host:$console_port/"
if cert=$(cd $var && setpriv --reuid=$user --regid=$user --init-groups -- \
    env -i HOME=$var LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    $prefix/venv/bin/appliance --config $etc/appliance.yaml cert 2>&1); then
  echo "  If a browser warns about its certificate, go on only if it shows this fingerprint:"
  echo "$cert" | sed 's/^/    /'
else
  echo "install.sh: the console's certificate is not usable:" >&2
  echo "$cert" | sed 's/^/    /' >&2
fi
echo "  Create the first account (as the service user, so the database stays its own):"
echo "    runuser -u $user -- appliance --config $etc/appliance.yaml users add NAME --role admin"
