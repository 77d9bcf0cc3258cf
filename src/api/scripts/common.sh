set -u
umask 077

die() { printf 'sluice: %s\n' "$2" >&2; exit "$1"; }

need_tools() {
  command -v curl >/dev/null 2>&1 || die 2 "curl is required"
  command -v ssh >/dev/null 2>&1 || die 2 "ssh (the OpenSSH client) is required"
  { : </dev/tty; } 2>/dev/null || die 2 "no terminal: run this from an interactive shell"
  tmp=$(mktemp -d) || die 2 "cannot make a temporary directory"
  trap 'rm -rf "$tmp"' EXIT
  trap 'exit 130' INT TERM
}

# The value of a string or number field of a flat JSON object.
field() {
  printf '%s' "$2" | sed -n -E 's/.*"'"$1"'":("(([^"\\]|\\.)*)"|(-?[0-9]+)).*/\2\4/p' | head -n 1
}

# The server's message, unescaped for display.
message() {
  field message "$1" | sed -e 's/\\"/"/g' -e 's/\\\\/\\/g'
}

# Escapes a string for a JSON string literal; refuses control characters it cannot carry.
json_string() {
  local s=$1
  case $s in *[$'\001'-$'\010\013\014\016'-$'\037']*) die 2 "the input contains control characters" ;; esac
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

# call METHOD PATH [BODY_FILE]: sets $code and $resp.
call() {
  local args=(-sS -o "$tmp/resp" -w '%{http_code}' -X "$1" -H 'Accept: application/json')
  if [ $# -ge 3 ]; then
    args+=(-H 'Content-Type: application/json' --data-binary "@$3")
  fi
  code=$(curl "${args[@]}" "$SLUICE_URL$2") || die 8 "cannot reach Sluice at $SLUICE_URL"
  resp=$(cat "$tmp/resp")
}

# Answers other than success end the script with the documented code.
fail_on() {
  case $code in
    401) die 3 "$(message "$resp")" ;;
    403) die 5 "$(message "$resp")" ;;
    404) die 4 "$(message "$resp")" ;;
    409) die 5 "$(message "$resp")" ;;
    429) die 6 "$(message "$resp")" ;;
    *) die 8 "unexpected answer from Sluice (HTTP $code): $(message "$resp")" ;;
  esac
}

read_secret() {
  local prompt=$1 value
  IFS= read -r -s -p "$prompt" value </dev/tty || die 2 "no input"
  printf '\n' >/dev/tty
  REPLY=$value
}

# connect USER HOST PORT KNOWN_HOSTS_LINE ONE_TIME_PASSWORD: ssh with the proxy's key pinned
# and the password handed over by an askpass helper (never on a command line or in ssh's
# environment).
connect() {
  printf '%s\n' "$4" >"$tmp/known_hosts"
  printf '%s\n' "$5" >"$tmp/pass"
  printf '#!/bin/sh\nexec cat %s\n' "'$tmp/pass'" >"$tmp/askpass"
  chmod 700 "$tmp/askpass"
  printf 'sluice: connecting to %s\n' "$1" >&2
  local status=0
  SSH_ASKPASS="$tmp/askpass" SSH_ASKPASS_REQUIRE=force ssh -p "$3" \
    -o UserKnownHostsFile="$tmp/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o StrictHostKeyChecking=yes -o PubkeyAuthentication=no \
    -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 \
    "$1@$2" </dev/tty || status=$?
  return $status
}
