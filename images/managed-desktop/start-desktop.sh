#!/bin/bash
# Run by the host's entrypoint, as root, before sshd: starts the owner's desktop in the
# background. The VNC password Sluice made for this host (/etc/sluice/vnc_password, readable by
# root only) becomes the X server's password file, readable by the owner's account only;
# Sluice answers the browser's VNC handshake itself, so the password never reaches a browser.
set -euo pipefail
. /etc/sluice/account
run=/run/sluice-desktop
install -d -m 0700 -o "$SLUICE_UID" -g "$SLUICE_UID" "$run"
install -d -m 1777 /tmp/.X11-unix
vncpasswd -f </etc/sluice/vnc_password >"$run/passwd"
chown "$SLUICE_UID:$SLUICE_UID" "$run/passwd"
chmod 0600 "$run/passwd"
setsid runuser -u "$SLUICE_USER" -- /usr/local/lib/sluice/desktop-session </dev/null &
