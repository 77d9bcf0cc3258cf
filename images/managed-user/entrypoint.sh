#!/bin/bash
# Entrypoint of a Sluice host: makes the owner's account (name and uid from
# /etc/sluice/account, written by Sluice), prepares the home volume, and runs sshd in the
# foreground after any start hooks of a derived image. Keys live in /etc/sluice, mounted read-only.
set -euo pipefail
. /etc/sluice/account
: "${SLUICE_USER:?}" "${SLUICE_UID:?}"
home="/home/$SLUICE_USER"

if ! getent passwd "$SLUICE_USER" >/dev/null; then
    groupadd --gid "$SLUICE_UID" "$SLUICE_USER"
    useradd --uid "$SLUICE_UID" --gid "$SLUICE_UID" --home-dir "$home" --no-create-home \
        --shell /bin/bash "$SLUICE_USER"
    # Not locked (sshd refuses locked accounts), but no password either: keys only.
    usermod -p '*' "$SLUICE_USER"
fi
mkdir -p "$home"
# A fresh home volume gets the skeleton files, owned by the account.
if [ ! -e "$home/.profile" ]; then
    cp -a /etc/skel/. "$home/"
    chown -R "$SLUICE_UID:$SLUICE_UID" "$home"
fi
chown "$SLUICE_UID:$SLUICE_UID" "$home"
chmod 0750 "$home"

# What an image built on this one adds (the desktop image starts its desktop here).
for hook in /usr/local/lib/sluice/start.d/*; do
    if [ -x "$hook" ]; then "$hook"; fi
done

exec /usr/sbin/sshd -D -e
