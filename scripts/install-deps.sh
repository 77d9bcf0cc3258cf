#!/usr/bin/env bash
# Installs what Sluice's tests need on Debian: PostgreSQL (server), OpenSSH's client tools,
# and the egress lab's tools (iproute2, iptables, wireguard-go and wg, tcpdump).
# Idempotent; installs only what is missing.
set -euo pipefail
missing=()
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v wireguard-go >/dev/null 2>&1 || missing+=(wireguard-go)
command -v wg >/dev/null 2>&1 || missing+=(wireguard-tools)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
