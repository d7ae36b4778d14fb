#!/usr/bin/env bash
# Makes sure a PostgreSQL server answers on 127.0.0.1:5432 (the backend tests need one; they are
# never silently skipped in CI). Starts the local cluster if it is installed but stopped; installs it
# from the distribution's packages when absent and we are root.
set -euo pipefail
answers() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if answers; then exit 0; fi
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing PostgreSQL from the distribution's packages" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "error: no PostgreSQL on 127.0.0.1:5432 and cannot install one" >&2; exit 1
  fi
fi
version=$(ls /etc/postgresql | sort -n | tail -1)
conf=/etc/postgresql/$version/main
# Trust auth on loopback for the test user, as on the development machines.
if ! grep -q "^host all all 127.0.0.1/32 trust" "$conf/pg_hba.conf" 2>/dev/null; then
  sed -i '1i host all all 127.0.0.1/32 trust' "$conf/pg_hba.conf" || true
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
for _ in $(seq 1 30); do answers && break; sleep 1; done
answers || { echo "error: PostgreSQL did not come up" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >&2
