#!/usr/bin/env bash
# Installs what Sluice's tests need on Debian: PostgreSQL (server), OpenSSH's clients (ssh,
# sftp, scp, ssh-agent), curl (the short-link scripts),
# and the egress lab's tools (iproute2, iptables, wireguard-go and wg, tcpdump, microsocks,
# tinyproxy, shadowsocks-libev, trojan, v2ray, socat as a TLS front, openssl for the
# certificates, iperf3, dig for UDP through a proxy), asciinema, systemd-analyze for the
# service units, Chromium and chromedriver for the browser tests, and from PyPI ssh-audit,
# schemathesis and the MCP SDK.
# Idempotent; installs only what is missing.
set -euo pipefail
missing=()
ls -d /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
for tool in ssh ssh-keygen sftp scp ssh-agent ssh-add; do
    command -v "$tool" >/dev/null 2>&1 || { missing+=(openssh-client); break; }
done
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v sha256sum >/dev/null 2>&1 || missing+=(coreutils)
command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v wireguard-go >/dev/null 2>&1 || missing+=(wireguard-go)
command -v wg >/dev/null 2>&1 || missing+=(wireguard-tools)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v microsocks >/dev/null 2>&1 || missing+=(microsocks)
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)
command -v ss-server >/dev/null 2>&1 || missing+=(shadowsocks-libev)
command -v trojan >/dev/null 2>&1 || missing+=(trojan)
command -v v2ray >/dev/null 2>&1 || missing+=(v2ray)
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# Plays back session recordings in the recording test.
command -v asciinema >/dev/null 2>&1 || missing+=(asciinema)
# The deploy/ units are checked with systemd's own verifier.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
# The browser tests: headless Chromium driven through chromedriver.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The lab starts its own proxy servers in its namespaces; the packaged service is not wanted.
    for service in tinyproxy shadowsocks-libev trojan v2ray; do
        if [[ " ${missing[*]} " == *" $service "* ]]; then
            invoke-rc.d "$service" stop >/dev/null 2>&1 || true
        fi
    done
fi
# Outside judges run by the tests, from PyPI, in a virtualenv of their own (Debian's Python
# refuses system-wide pip installs): ssh-audit on the SSH proxy, schemathesis on /openapi.json,
# the official MCP Python SDK (`mcp`) as the client of /mcp, and the Prometheus client's
# OpenMetrics parser (`prometheus-client`) on /metrics.
if ! command -v ssh-audit >/dev/null 2>&1 || ! command -v schemathesis >/dev/null 2>&1 \
    || ! /opt/sluice-judges/bin/python -c 'import mcp, prometheus_client' >/dev/null 2>&1; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    echo "installing from PyPI: ssh-audit schemathesis mcp prometheus-client"
    python3 -m venv /opt/sluice-judges
    /opt/sluice-judges/bin/pip install --quiet --disable-pip-version-check ssh-audit schemathesis mcp prometheus-client
    ln -sf /opt/sluice-judges/bin/ssh-audit /opt/sluice-judges/bin/schemathesis /usr/local/bin/
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && ! cargo nextest --version >/dev/null 2>&1; then
    cargo install --locked cargo-nextest
fi
