#!/bin/bash
# The owner's desktop, as the owner's account: TigerVNC's X server on display :1 (VNC on
# 127.0.0.1:5901 inside the container only, VNC authentication with the host's password),
# then openbox with its autostart (panel, terminal). Started again if the X server ends.
# xdotool is there for the owner's automation (and Sluice's tests drive the browser with it).
set -u
export USER="$(id -un)" HOME="/home/$(id -un)" DISPLAY=:1 LANG=C.UTF-8
cd "$HOME"
while true; do
    rm -f /tmp/.X1-lock /tmp/.X11-unix/X1
    Xtigervnc :1 -localhost=1 -rfbport 5901 -SecurityTypes VncAuth \
        -PasswordFile /run/sluice-desktop/passwd -AlwaysShared=1 -AcceptSetDesktopSize=1 \
        -geometry 1280x800 -depth 24 -desktop "$(hostname)" -nolisten tcp &
    xserver=$!
    for _ in $(seq 100); do
        [ -S /tmp/.X11-unix/X1 ] && break
        sleep 0.1
    done
    openbox --startup "/bin/sh /etc/xdg/openbox/autostart" &
    wait "$xserver"
    echo "sluice-desktop: the X server ended; starting it again" >&2
    sleep 1
done
