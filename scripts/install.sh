#!/usr/bin/env bash
# Installs bothy on this host and starts its daemon on 127.0.0.1:7070.
#
#   sudo ./scripts/install.sh
#
# Safe to run again: packages, the base image and the service are only (re)made
# when needed; a running daemon is restarted so that it runs the new binary.
# Running boxes keep running through that restart.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX_BIN=/usr/local/bin/bothy
DATA_DIR=/var/lib/bothy
IMAGE_DIR=/var/lib/bothy-images
LISTEN=127.0.0.1:7070
LOG=/var/log/bothy.log
PIDFILE=/run/bothy.pid
UNIT=/etc/systemd/system/bothy.service
READY_TIMEOUT_S=60

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root: sudo $0"

say "host packages"
"$REPO/scripts/deps.sh"

# Build as the user who called sudo when their rustup toolchain lives in their home:
# root's HOME has no toolchain, and a root-owned target/ in their checkout is a trap.
cargo_cmd() {
  local user_home=""
  if [[ -n ${SUDO_USER:-} && ${SUDO_USER} != root ]]; then
    user_home="$(getent passwd "$SUDO_USER" | cut -d: -f6)"
  fi
  if [[ -n $user_home && -x $user_home/.cargo/bin/cargo ]]; then
    sudo -u "$SUDO_USER" -H env "PATH=$user_home/.cargo/bin:$PATH" cargo "$@"
  elif command -v cargo >/dev/null 2>&1; then
    cargo "$@"
  elif [[ -x $HOME/.cargo/bin/cargo ]]; then
    "$HOME/.cargo/bin/cargo" "$@"
  else
    die "cargo not found. Install Rust (1.85 or newer) with rustup, then run this again:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . \"\$HOME/.cargo/env\""
  fi
}

say "building bothy (cargo build --release)"
(cd "$REPO" && cargo_cmd build --release -p bothy)
target_dir="${CARGO_TARGET_DIR:-$REPO/target}"
built="$target_dir/release/bothy"
[[ -x $built ]] || die "build finished but $built is missing; set CARGO_TARGET_DIR if you moved the target dir"

say "installing $PREFIX_BIN"
# Rename over the old binary instead of writing into it: running boxes keep the old
# inode bind-mounted as their init, and writing a busy executable fails anyway.
install -m 0755 "$built" "$PREFIX_BIN.new"
mv -f "$PREFIX_BIN.new" "$PREFIX_BIN"

if compgen -G "$IMAGE_DIR/base-*.ext4" >/dev/null; then
  say "base image present in $IMAGE_DIR (rebuild with: bothy image build --image-dir $IMAGE_DIR)"
else
  say "building the Debian base image into $IMAGE_DIR (about a minute)"
  "$PREFIX_BIN" image build --image-dir "$IMAGE_DIR"
fi

wait_until_listening() {
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    # Any HTTP answer (even 401) means the API is up; 000 means no connection yet.
    if [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$LISTEN/v1/sprites" || true) != 000 ]]; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}

daemon_cmd=("$PREFIX_BIN" daemon --data-dir "$DATA_DIR" --listen "$LISTEN" --image-dir "$IMAGE_DIR")

if [[ -d /run/systemd/system ]]; then
  say "installing systemd unit $UNIT"
  cat >"$UNIT.new" <<UNITEOF
[Unit]
Description=bothy daemon: durable Linux boxes for coding agents
Documentation=file://$REPO/README.md
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${daemon_cmd[*]}
Restart=on-failure
RestartSec=2
# SIGTERM goes to the daemon only. Boxes, their pasta and the storage process
# that serves their disks outlive the daemon: a restart (an upgrade) or a crash
# leaves them running and the next daemon adopts them. With the default
# control-group mode systemd would kill them all on every restart.
KillMode=process
TimeoutStopSec=120
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
UNITEOF
  mv -f "$UNIT.new" "$UNIT"
  systemctl daemon-reload
  systemctl enable bothy.service >/dev/null
  if systemctl is-active --quiet bothy.service; then
    say "restarting bothy.service"
    systemctl restart bothy.service
  else
    systemctl start bothy.service
  fi
  how_logs="journalctl -u bothy -f"
else
  say "no systemd: running the daemon in the background (log $LOG, pid file $PIDFILE)"
  if [[ -s $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    old="$(cat "$PIDFILE")"
    say "stopping the running daemon (pid $old) to start the new binary"
    kill -TERM "$old"
    deadline=$((SECONDS + 120))
    while kill -0 "$old" 2>/dev/null; do
      ((SECONDS < deadline)) || die "daemon pid $old did not stop within 120 s; see $LOG"
      sleep 0.5
    done
  fi
  mkdir -p "$(dirname "$LOG")"
  # setsid: the daemon must not die with this terminal's session.
  setsid nohup "${daemon_cmd[@]}" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  how_logs="tail -f $LOG"
fi

say "waiting for the API on http://$LISTEN"
wait_until_listening || die "the daemon did not answer on http://$LISTEN within ${READY_TIMEOUT_S} s; see: $how_logs"

cat <<NEXT

bothy is installed and its daemon answers on http://$LISTEN.

Next steps:
  bothy create demo --skip-console
  bothy exec -s demo -- cat /etc/os-release
  bothy console -s demo            # a root shell; Ctrl-\\ detaches
  bothy list

As root, the CLI reads the admin token from $DATA_DIR/admin-token. As another user:
  export BOTHY_TOKEN=\$(sudo cat $DATA_DIR/admin-token)

Logs: $how_logs
Run the test suite: sudo ./scripts/test.sh
NEXT
