#!/usr/bin/env bash
# Installs Switchboard on this Debian box and starts it on the embedded default (offline) config.
# Usage (root, Debian 12, from a clone):  scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)
prefix=/opt/switchboard
etc=/etc/switchboard
var=/var/lib/switchboard

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends kamailio python3-venv curl >/dev/null
# Debian enables its own kamailio service on install; ours runs the edge with our config.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now kamailio >/dev/null 2>&1 || true
fi

python=${PYTHON:-python3}
[ -x $prefix/venv/bin/python ] || "$python" -m venv $prefix/venv
$prefix/venv/bin/pip install -q --upgrade pip >/dev/null
$prefix/venv/bin/pip install -q "$src"
ln -sf $prefix/venv/bin/appliance /usr/local/bin/appliance

mkdir -p $etc $var/recordings
[ -d $etc/flows ] || cp -r "$src/flows" $etc/flows
if [ ! -f $etc/appliance.yaml ]; then
  cat > $etc/appliance.yaml <<YAML
# Switchboard configuration; every key and its default: docs/CONFIG.md
data_dir: $var
recordings_dir: $var/recordings
flows_dir: $etc/flows
YAML
fi

if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  install -m 644 "$src/systemd/switchboard.service" /etc/systemd/system/switchboard.service
  systemctl daemon-reload
  systemctl enable --now switchboard.service
  systemctl restart switchboard.service
else
  # No systemd (a container): run it in the background, logs in $var/appliance.log.
  if [ -f $var/appliance.pid ] && kill -0 "$(cat $var/appliance.pid)" 2>/dev/null; then
    kill "$(cat $var/appliance.pid)"; sleep 2
  fi
  nohup appliance --config $etc/appliance.yaml run >> $var/appliance.log 2>&1 &
  echo $! > $var/appliance.pid
fi

for _ in $(seq 1 30); do
  if curl -fsS http://127.0.0.1:8080/healthz >/dev/null 2>&1; then break; fi
  sleep 1
done
host=$(hostname -I 2>/dev/null | awk '{print $1}')
echo
echo "Switchboard is running. Call it from a SIP softphone or sipp on your LAN:"
echo "    sip:100@${host:-<this-host>}:5060"
echo "Recent calls:   appliance --config $etc/appliance.yaml calls"
echo "Config:         $etc/appliance.yaml   Flows: $etc/flows/"
