#!/usr/bin/env bash
# Backs Sluice up: `sluice backup create` (an online snapshot of the database with the data
# directory's keys, checksummed) into BACKUP_DIR, then deletes this script's archives older than
# RETENTION_DAYS. For cron, or the systemd timer deploy/sluice-backup.timer.
#
#   sudo bash deploy/scripts/backup.sh
#   BACKUP_DIR=/data/backups RETENTION_DAYS=30 bash deploy/scripts/backup.sh
#
# Defaults: BACKUP_DIR=/var/backups/sluice, RETENTION_DAYS=7. The service's settings are read
# from SLUICE_ENV_FILE (default /etc/sluice/sluice.env), so DATABASE_URL and SLUICE_DATA_DIR are
# the server's. SLUICE names the binary (default: sluice on the PATH). The archives hold the
# sealing keys: keep BACKUP_DIR as private as the data directory (this script makes it 0700).
# Restore with: sluice backup restore FILE (with the server stopped).
set -euo pipefail

BACKUP_DIR=${BACKUP_DIR:-/var/backups/sluice}
RETENTION_DAYS=${RETENTION_DAYS:-7}
SLUICE=${SLUICE:-sluice}
ENV_FILE=${SLUICE_ENV_FILE:-/etc/sluice/sluice.env}

if ! [[ $RETENTION_DAYS =~ ^[0-9]+$ ]] || [ "$RETENTION_DAYS" -lt 1 ]; then
    echo "backup.sh: RETENTION_DAYS must be a whole number of days, at least 1 (got '$RETENTION_DAYS')" >&2
    exit 2
fi
if [ -r "$ENV_FILE" ]; then
    set -a
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    set +a
fi
export SLUICE_DATA_DIR=${SLUICE_DATA_DIR:-/var/lib/sluice}

umask 077
mkdir -p "$BACKUP_DIR"
chmod 700 "$BACKUP_DIR"
name="sluice-backup-$(date -u +%Y%m%dT%H%M%SZ).tar.gz"
"$SLUICE" backup create --output "$BACKUP_DIR/$name"

# Retention: only this script's archives, and never the one just made.
find "$BACKUP_DIR" -maxdepth 1 -type f -name 'sluice-backup-*.tar.gz' ! -name "$name" \
    -mmin +$((RETENTION_DAYS * 24 * 60)) -print -delete | sed 's/^/backup.sh: removed /'
