#!/bin/bash
# Entrypoint of a Sluice host: makes the owner's account (name and uid from
# /etc/sluice/account, written by Sluice; each host has a uid of its own), prepares the home
# volume, and runs sshd in the foreground after any start hooks of a derived image. Keys live
# in /etc/sluice, mounted read-only.
#
# This runs as root in a home the owner controls. The rule: root touches no path inside the
# home but the volume's root itself (a mount point, which nobody can replace), and touches
# nothing the owner could have planted elsewhere (/run and /tmp are fresh tmpfs at every start,
# mounted by Sluice). Whatever reads or writes the owner's files runs as the owner.
set -euo pipefail
. /etc/sluice/account
: "${SLUICE_USER:?}" "${SLUICE_UID:?}"
home="/home/$SLUICE_USER"

# The account, with the uid Sluice gave this host. A container made when every host was uid
# 1000 is given its host's own uid here (the entry is rewritten; nothing in the home moves).
current_uid=$(getent passwd "$SLUICE_USER" | cut -d: -f3 || true)
if [ -n "$current_uid" ] && [ "$current_uid" != "$SLUICE_UID" ]; then
    userdel "$SLUICE_USER"
    groupdel "$SLUICE_USER" 2>/dev/null || true
    current_uid=
fi
if [ -z "$current_uid" ]; then
    groupadd --gid "$SLUICE_UID" "$SLUICE_USER"
    useradd --uid "$SLUICE_UID" --gid "$SLUICE_UID" --home-dir "$home" --no-create-home \
        --shell /bin/bash "$SLUICE_USER"
    # Not locked (sshd refuses locked accounts), but no password either: keys only.
    usermod -p '*' "$SLUICE_USER"
fi

# sshd's privilege separation directory, on the fresh /run.
install -d -m 0755 /run/sshd

# The home volume's root is the one path in it root changes: it is a mount point.
owner=$(stat -c %u "$home")
if [ "$owner" != "0" ] && [ "$owner" != "$SLUICE_UID" ]; then
    # A home made under another uid (every host was uid 1000 before each had its own): its
    # files move to this host's uid. Nothing of the owner runs yet, so nothing races this;
    # symbolic links are changed themselves (-h), never followed; nothing is mounted inside the
    # home, and a hard link can only name a file of this volume, which the owner owns anyway.
    chown -R -h --from="$owner" "$SLUICE_UID:$SLUICE_UID" "$home"
fi
chown "$SLUICE_UID:$SLUICE_UID" "$home"
chmod 0750 "$home"

# A fresh home volume gets the skeleton files, copied by the account itself: links the owner
# planted can only lead where the owner may already write.
if ! runuser -u "$SLUICE_USER" -- test -e "$home/.profile"; then
    runuser -u "$SLUICE_USER" -- cp -r /etc/skel/. "$home/" ||
        echo "sluice: some skeleton files could not be copied into $home" >&2
fi

# What an image built on this one adds (the desktop image starts its desktop here). Hooks run
# as root: they follow the same rule.
for hook in /usr/local/lib/sluice/start.d/*; do
    if [ -x "$hook" ]; then "$hook"; fi
done

exec /usr/sbin/sshd -D -e
