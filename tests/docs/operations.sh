#!/usr/bin/env bash
# docs/operations.md, executed: the blocks marked `<!-- ci: NAME -->` run as written, in a
# scratch directory, and each one's effect is checked. `.ci/run` runs this after the tests
# (it needs the debug `canhbao` binary, PostgreSQL at PGHOST and a free port 8080).
#
# What cannot run here is stood in for, and only that: the paths /opt/canhbao, /etc/canhbao,
# /var/lib/canhbao, /var/backups, /etc/systemd/system, /usr/local/bin and
# /etc/mosquitto/canhbao are moved into the scratch directory; `cargo build` is the binary
# under test; `useradd` and `chgrp` do nothing (there is no canhbao user: ownership is not
# checked); `install -o/-g` drop the owner; `runuser -u USER --` runs the command as this user;
# `apt-get` does nothing (CI installs the packages);
# `systemctl` starts, stops and restarts the service as the unit says (its Environment=,
# EnvironmentFile=, LoadCredential= directory, WorkingDirectory= and ExecStart=;
# StateDirectory= as the moved /var/lib/canhbao, which the config's copy names too), or,
# for `reload mosquitto`, a Mosquitto of this run's own on the generated files. The
# PostgreSQL blocks run on a database and role of this run's own, named for it, and the
# key rotation's NEW_KEY_ID and OLD_KEY_ID are the ids its first block printed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
bin=${CANHBAO_BIN:-$repo/target/debug/canhbao}
[ -x "$bin" ] || { echo "error: no canhbao binary at $bin (cargo build first)" >&2; exit 1; }
S=$(mktemp -d)
export S
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$S/service.pid" ] && kill "$(cat "$S/service.pid")" 2>/dev/null || true
  [ -f "$S/mosquitto.pid" ] && kill "$(cat "$S/mosquitto.pid")" 2>/dev/null || true
  if [ -n "${DB:-}" ]; then
    dropdb --if-exists "$DB" >/dev/null 2>&1 || true
    psql -q -d postgres -c "DROP ROLE IF EXISTS $DB" >/dev/null 2>&1 || true
  fi
  rm -rf "$S"
}
trap cleanup EXIT
fail() { echo "error: $*" >&2; [ -f "$S/service.log" ] && tail -5 "$S/service.log" >&2; exit 1; }
step() { printf '\n--- %s\n' "$*"; }

# The block after `<!-- ci: NAME -->` (indented blocks are unindented).
block() {
  awk -v marker="<!-- ci: $1 -->" '
    { line = $0; sub(/^[ \t]+/, "", line) }
    line == marker { armed = 1; next }
    armed && !inside && line ~ /^```sh/ { inside = 1; next }
    inside && line ~ /^```/ { exit }
    inside { print line }' "$repo/docs/operations.md"
}
relocate() {
  sed -e "s#/opt/canhbao#$S/opt/canhbao#g" -e "s#/etc/canhbao#$S/etc/canhbao#g" \
    -e "s#/var/lib/canhbao#$S/var/lib/canhbao#g" -e "s#/etc/systemd/system#$S/etc/systemd/system#g" \
    -e "s#/usr/local/bin#$S/bin#g" -e "s#/etc/mosquitto/canhbao#$S/etc/mosquitto/canhbao#g" \
    -e "s#/var/backups#$S/var/backups#g" -e "s#/etc/mosquitto/conf.d#$S/etc/mosquitto/conf.d#g"
}
run_block() { # name: runs it from $S/src, its output in $S/NAME.out
  local text
  text=$(block "$1" | relocate)
  [ -n "$text" ] || fail "docs/operations.md has no block marked $1"
  printf '%s\n' "$text" | sed 's/^/    /'
  (cd "$S/src" && PATH="$S/stub:$S/bin:$PATH" bash -euo pipefail -c "$text") > "$S/$1.out" 2> "$S/$1.err" \
    || { cat "$S/$1.err" >&2; fail "the block $1 failed"; }
}

# The stand-ins.
mkdir -p "$S/stub" "$S/bin" "$S/src/target/release"
cp "$bin" "$S/src/target/release/canhbao"
cp -r "$repo/config" "$S/src/config"
# The data directory the production profile names, moved like the other paths, and its
# broker on this run's own Mosquitto.
python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' > "$S/mosquitto.port"
sed -i -e "s#/var/lib/canhbao#$S/var/lib/canhbao#g" \
  -e "s#mqtt://127.0.0.1:1883#mqtt://127.0.0.1:$(cat "$S/mosquitto.port")#" "$S/src/config/"*.toml
ln -s "$repo/deploy" "$S/src/deploy"
ln -s "$repo/docs" "$S/src/docs"
# What the mosquitto package makes.
mkdir -p "$S/etc/mosquitto/conf.d"
for cmd in cargo useradd chgrp apt-get; do printf '#!/bin/sh\nexit 0\n' > "$S/stub/$cmd"; done
cat > "$S/stub/install" <<'SH'
#!/bin/sh
# install without -o and -g: there is no canhbao user here.
args=""
while [ $# -gt 0 ]; do
  case "$1" in -o|-g) shift 2 ;; *) args="$args '$1'"; shift ;; esac
done
eval exec /usr/bin/install $args
SH
cat > "$S/stub/runuser" <<'SH'
#!/bin/sh
# runuser -u USER -- COMMAND...: as this user.
[ "$1" = -u ] && shift 2
[ "$1" = -- ] && shift
exec "$@"
SH
cat > "$S/stub/systemctl" <<'SH'
#!/bin/bash
set -euo pipefail
unit="$S/etc/systemd/system/canhbao.service"
start_service() {
  # As the unit says, with the paths moved.
  local envs=() file dir exec
  while IFS= read -r l; do envs+=("${l#Environment=}"); done < <(grep '^Environment=' "$unit" | sed "s#/opt/canhbao#$S/opt/canhbao#g")
  file=$(grep '^EnvironmentFile=' "$unit" | sed -e 's/^EnvironmentFile=-\{0,1\}//' -e "s#/etc/canhbao#$S/etc/canhbao#")
  dir=$(grep '^WorkingDirectory=' "$unit" | sed -e 's/^WorkingDirectory=//' -e "s#/opt/canhbao#$S/opt/canhbao#")
  exec=$(grep '^ExecStart=' "$unit" | sed -e 's/^ExecStart=//' -e "s#/opt/canhbao#$S/opt/canhbao#")
  mkdir -p "$S/var/lib/canhbao"
  (
    set -a; [ -f "$file" ] && . "$file"; set +a
    cd "$dir"
    env -i PATH="$PATH" "${envs[@]}" CREDENTIALS_DIRECTORY="$S/etc/canhbao/credentials" \
      $exec > "$S/service.log" 2>&1 &
    echo $! > "$S/service.pid"
  )
  # Up once it answers with its database (the broker may come later, as on a first install).
  for _ in $(seq 1 100); do
    curl -s http://127.0.0.1:8080/readyz | grep -q '"database":"ok"' && return 0
    kill -0 "$(cat "$S/service.pid")" 2>/dev/null || { tail -5 "$S/service.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "systemctl: canhbao not ready after 20 s" >&2; exit 1
}
case "$*" in
  daemon-reload) ;;
  "enable --now canhbao"|"start canhbao") start_service ;;
  "stop canhbao") kill "$(cat "$S/service.pid")"; sleep 1 ;;
  "restart canhbao") kill "$(cat "$S/service.pid")"; sleep 1; start_service ;;
  "reload mosquitto"|"restart mosquitto")
    # The shipped conf.d file as installed, on this run's port and paths.
    port=$(cat "$S/mosquitto.port")
    [ -f "$S/mosquitto.pid" ] && kill "$(cat "$S/mosquitto.pid")" 2>/dev/null && sleep 0.5
    [ -f "$S/etc/mosquitto/conf.d/canhbao.conf" ] || { echo "systemctl: no conf.d/canhbao.conf installed" >&2; exit 1; }
    sed -e "s#^listener 1883\$#listener $port 127.0.0.1#" -e "s#/etc/mosquitto/canhbao#$S/etc/mosquitto/canhbao#g" \
      "$S/etc/mosquitto/conf.d/canhbao.conf" > "$S/mosquitto.conf"
    # Run as root (CI), Mosquitto would drop to its own user, who cannot enter the scratch
    # directory; it keeps this run's user instead.
    [ "$(id -u)" = 0 ] && echo "user root" >> "$S/mosquitto.conf"
    mosquitto -c "$S/mosquitto.conf" > "$S/mosquitto.log" 2>&1 &
    echo $! > "$S/mosquitto.pid"
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && exit 0; sleep 0.1; done
    echo "systemctl: mosquitto did not start: $(cat "$S/mosquitto.log")" >&2; exit 1 ;;
  *) echo "systemctl stand-in: $* is not stood in for" >&2; exit 1 ;;
esac
SH
chmod 0755 "$S/stub/"*

step "Install (systemd), as written"
run_block install
ready=$(curl -s http://127.0.0.1:8080/readyz)
echo "    readyz: $ready"
[[ "$ready" == *'"database":"ok"'* && "$ready" == *'"broker":"ok"'* ]] || fail "not ready: $ready"
grep -q 'configuration OK' "$S/install.out" || fail "check-config did not pass: $(cat "$S/install.out")"
[ -s "$S/var/lib/canhbao/canhbao.db" ] || fail "no database at the credential's path"
[ ! -e "$S/var/lib/canhbao/admin.token" ] || fail "the bootstrap token was not retired by the first admin"
admin_pw=$(sed -n 's/^password (shown once): //p' "$S/install.out")
[ "${#admin_pw}" -ge 16 ] || fail "users add printed no password: $(cat "$S/install.out")"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  -d "{\"username\":\"truong.phong\",\"password\":\"$admin_pw\"}" http://127.0.0.1:8080/api/v1/login)
[ "$code" = 200 ] || fail "the admin it made cannot log in: $code"
echo "    ok: ready, check-config passed, the first admin logs in, the bootstrap token is gone"

step "Adding a receiver, as written"
run_block add-receiver
rx_pw=$(head -n 1 "$S/add-receiver.out")
grep -q '^user loa-06385-02$' "$S/etc/mosquitto/canhbao/acl" || fail "the ACL has no user for the receiver"
port=$(cat "$S/mosquitto.port")
mosquitto_pub -h 127.0.0.1 -p "$port" -i rx-loa-06385-02 -u loa-06385-02 -P "$rx_pw" \
  -t canhbao/v1/heartbeat/loa-06385-02 -q 1 -m '{}' || fail "the receiver cannot log in with its password"
if mosquitto_pub -h 127.0.0.1 -p "$port" -u loa-06385-02 -P wrong-password -t x -m x 2>/dev/null; then
  fail "a wrong password was taken"
fi
echo "    ok: the receiver logs in to a Mosquitto on the generated files, a wrong password does not"

step "Upgrade (SQLite), as written"
mkdir -p "$S/var/backups"
run_block upgrade
copy=$(ls "$S"/var/backups/canhbao-*.db)
[ "$(stat -c %a "$copy")" = 600 ] || fail "the backup is readable by others: $(stat -c %a "$copy")"
[ "$(sqlite3 "$copy" 'PRAGMA integrity_check')" = ok ] || fail "the backup is not a sound database"
grep -q 'configuration OK' "$S/upgrade.out" || fail "check-config did not pass: $(cat "$S/upgrade.out")"
code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
  -d "{\"username\":\"truong.phong\",\"password\":\"$admin_pw\"}" http://127.0.0.1:8080/api/v1/login)
[ "$code" = 200 ] || fail "the admin cannot log in after the upgrade: $code"
echo "    ok: the backup is a sound database of mode 600; the upgraded service is ready and keeps its people"

step "Key rotation, as written"
run_block key-rotation-add
old=$(grep '"state":"active"' "$S/key-rotation-add.out" | head -n 1 | sed 's/.*"key_id":"\([^"]*\)".*/\1/')
new=$(grep '"state":"valid"' "$S/key-rotation-add.out" | grep -v "$old" | tail -n 1 | sed 's/.*"key_id":"\([^"]*\)".*/\1/')
[ -n "$old" ] && [ -n "$new" ] && [ "$old" != "$new" ] || fail "keys list/generate named no old and new key: $(cat "$S/key-rotation-add.out")"
text=$(block key-rotation-switch | relocate | sed -e "s/NEW_KEY_ID/$new/g" -e "s/OLD_KEY_ID/$old/g")
printf '%s\n' "$text" | sed 's/^/    /'
(cd "$S/src" && PATH="$S/stub:$S/bin:$PATH" bash -euo pipefail -c "$text") > "$S/key-rotation-switch.out" 2>&1 \
  || { cat "$S/key-rotation-switch.out" >&2; fail "the block key-rotation-switch failed"; }
keys=$(curl -s http://127.0.0.1:8080/api/v1/keys)
grep -q "\"key_id\":\"$new\"[^}]*\"state\":\"active\"" <<< "$keys" || fail "after the restart $new does not sign: $keys"
grep -q "\"key_id\":\"$old\"[^}]*\"state\":\"retired\"" "$S/key-rotation-switch.out" || fail "$old is not retired: $(cat "$S/key-rotation-switch.out")"
# The key set the service publishes to receivers: an envelope whose payload lists the revoked keys.
revoked=$(python3 -c 'import sys, json, base64
e = json.load(open(sys.argv[1]))
print(" ".join(json.loads(base64.b64decode(e["payload"]))["revoked"]))' "$S/var/lib/canhbao/keyring/keyset.json")
[[ " $revoked " == *" $old "* ]] || fail "the key set does not revoke $old: $revoked"
echo "    ok: the new key signs after the restart, the old one is retired and revoked in the key set"

step "Several instances on PostgreSQL: the database, then back up and restore, as written"
export PGHOST=${PGHOST:-127.0.0.1} PGUSER=${PGUSER:-postgres}
DB="cbdocs_$$"
pg_block() { # name: the block with the run's database, role, password, host and backup directory
  block "$1" | relocate | sed -e "s/--owner canhbao canhbao/--owner $DB $DB/" -e "s/--role=canhbao/--role=$DB/" \
    -e "s/-d canhbao /-d $DB /" -e "s/--if-exists canhbao\$/--if-exists $DB/" -e "s/-Fc canhbao /-Fc $DB /" \
    -e "s/--pwprompt canhbao\$/--pwprompt $DB/" -e "s#postgres://canhbao:PASSWORD@db.internal:5432/canhbao#postgres://$DB:$DB-pw@$PGHOST:5432/$DB#" \
    -e "s#/backup/#$S/backup/#g" -e 's/canhbao-DATE\.dump/canhbao-$(date +%F).dump/'
}
text=$(pg_block pg-setup)
printf '%s\n' "$text" | sed 's/^/    /'
if grep -qE '(^| )canhbao( |$)' <<< "$text"; then fail "the block pg-setup names the database in a way this run does not know"; fi
# createuser asks for the password on the terminal, or on its input when there is none.
printf '%s\n%s\n' "$DB-pw" "$DB-pw" | PATH="$S/stub:$PATH" setsid -w bash -euo pipefail -c "$text" \
  || fail "the block pg-setup failed"
url=$(cat "$S/etc/canhbao/credentials/CANHBAO__DATABASE__URL")
[ "$url" = "postgres://$DB:$DB-pw@$PGHOST:5432/$DB" ] || fail "the credential holds $url"
[ "$(psql -tA -d postgres -c "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB'")" = "$DB" ] \
  || fail "the database is not owned by the service's role"
[ "$(psql -tA -d postgres -c "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '$DB'")" = t ] \
  || fail "the role has no password"
echo "    ok: the role has its password, owns its database, and the credential names both"
pg_serve() { # a second instance on the database, until ready; then stopped
  CANHBAO__DATABASE__URL="$url" "$bin" serve --config-dir "$repo/config" \
    --data-dir "$S/pg-instance" --http 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --no-demo > "$S/pg-$1.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    grep -q 'migrations applied' "$S/pg-$1.log" && { kill "$pid"; wait "$pid" || true; return 0; }
    kill -0 "$pid" 2>/dev/null || { tail -3 "$S/pg-$1.log" >&2; return 1; }
    sleep 0.2
  done
  kill "$pid"; return 1
}
pg_serve first || fail "the first start on PostgreSQL failed"
mkdir -p "$S/backup"
for name in pg-backup pg-restore; do
  text=$(pg_block "$name")
  if grep -qE '(^| )canhbao( |$)' <<< "$text"; then fail "the block $name names the database in a way this run does not know"; fi
  printf '%s\n' "$text" | sed 's/^/    /'
  PATH="$S/stub:$PATH" bash -euo pipefail -c "$text" || fail "the block $name failed"
done
dump=$(ls "$S"/backup/*.dump)
[ "$(stat -c %a "$dump")" = 600 ] || fail "the dump is readable by others: $(stat -c %a "$dump")"
pg_serve restored || fail "the service cannot start on the restored database"
echo "    ok: the dump is mode 600; the restored database takes the service"
echo
echo "docs/operations.md: every marked block ran as written"
