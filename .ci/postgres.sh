#!/usr/bin/env bash
# Starts a local PostgreSQL on 127.0.0.1:5432 with a rustunnel_test database (idempotent).
set -euo pipefail
ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
if [ -z "$ver" ]; then
  echo "postgresql is not installed" >&2
  exit 1
fi
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$ver main"; then
  pg_createcluster "$ver" main >/dev/null
fi
pg_ctlcluster "$ver" main start 2>/dev/null || true
for _ in $(seq 1 50); do
  pg_isready -h 127.0.0.1 -p 5432 -q && break
  sleep 0.2
done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='rustunnel'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE rustunnel LOGIN PASSWORD 'rustunnel' SUPERUSER\""
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='rustunnel_test'\"" | grep -q 1 \
  || su postgres -c "createdb -O rustunnel rustunnel_test"
echo "postgresql $ver ready on 127.0.0.1:5432"
