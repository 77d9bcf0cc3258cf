#!/bin/bash
# Run by the host's entrypoint, as root, before sshd: starts the owner's desktop in the
# background. The VNC password Sluice made for this host (/etc/sluice/vnc_password, readable by
# root only) becomes the X server's password file, readable by the owner's account only;
# Sluice answers the browser's VNC handshake itself, so the password never reaches a browser.
#
# Root makes only fresh directories on /run and /tmp (tmpfs mounted by Sluice at every start,
# so nothing the owner planted is there) and writes no file the owner can reach: the password
# file is written by the account itself, from the password root reads for it.
set -euo pipefail
. /etc/sluice/account
run=/run/sluice-desktop
install -d -m 0700 -o "$SLUICE_UID" -g "$SLUICE_UID" "$run"
install -d -m 1777 /tmp/.X11-unix
vncpasswd -f </etc/sluice/vnc_password |
    runuser -u "$SLUICE_USER" -- sh -c 'umask 077; cat >/run/sluice-desktop/passwd'
setsid runuser -u "$SLUICE_USER" -- /usr/local/lib/sluice/desktop-session </dev/null &
