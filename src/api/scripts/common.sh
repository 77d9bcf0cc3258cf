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
  warn_plain_http
}

# Over plain http to anything but this machine, the password about to be asked for crosses the
# network readable by anyone on the path: say so on the terminal first.
warn_plain_http() {
  local rest host
  case $SLUICE_URL in
    http://*) rest=${SLUICE_URL#http://} ;;
    *) return 0 ;;
  esac
  rest=${rest%%/*}
  case $rest in
    \[*) host="${rest%%]*}]" ;;
    *) host=${rest%%:*} ;;
  esac
  case $host in
    localhost | 127.* | '[::1]') return 0 ;;
  esac
  printf 'sluice: warning: %s is plain http: your password and session details cross the network unencrypted.\nsluice: ask your administrator for an https:// link if this is not a network you trust.\n' "$host" >/dev/tty
}

# The value of a string or number field of a flat JSON object.
field() {
  printf '%s' "$2" | sed -n -E 's/.*"'"$1"'":("(([^"\\]|\\.)*)"|(-?[0-9]+)).*/\2\4/p' | head -n 1
}

# The server's message, unescaped for display, without control characters (a message never
# gets to move the cursor or retitle the terminal).
message() {
  field message "$1" | sed -e 's/\\"/"/g' -e 's/\\\\/\\/g' | LC_ALL=C tr -d '\000-\010\013-\037\177' | head -c 500
}

# checked NAME VALUE REGEX: dies unless VALUE (a field Sluice sent) matches REGEX whole.
checked() {
  [[ $2 =~ $3 ]] || die 8 "unexpected $1 from Sluice; refusing to use it"
  printf '%s' "$2"
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
  local user host port key pass
  # Every field is checked before use: nothing from the answer becomes an ssh option.
  user=$(checked "user name" "$1" '^[a-z0-9][a-z0-9._-]{0,31}$') || exit
  host=$(checked "host" "$2" '^[A-Za-z0-9.:_]([A-Za-z0-9.:_-]{0,252})$|^\[[0-9A-Fa-f:.]+\]$') || exit
  port=$(checked "port" "$3" '^[1-9][0-9]{0,4}$') || exit
  [ "$port" -le 65535 ] || die 8 "unexpected port from Sluice; refusing to use it"
  key=$(checked "host key" "$4" '^[][A-Za-z0-9.:_-]+ (ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|rsa-sha2-(256|512)|ssh-rsa) [A-Za-z0-9+/]+={0,2}$') || exit
  pass=$(checked "one-time password" "$5" '^[[:graph:]]{8,128}$') || exit
  printf '%s\n' "$key" >"$tmp/known_hosts"
  printf '%s\n' "$pass" >"$tmp/pass"
  printf '#!/bin/sh\nexec cat %s\n' "'$tmp/pass'" >"$tmp/askpass"
  chmod 700 "$tmp/askpass"
  printf 'sluice: connecting to %s\n' "$user" >&2
  local status=0
  # -F /dev/null: no user or system ssh_config (no ProxyCommand, LocalCommand or forwards from
  # there); -a -x: no agent or X11 forwarding into the host; -- before the destination.
  SSH_ASKPASS="$tmp/askpass" SSH_ASKPASS_REQUIRE=force ssh -F /dev/null -a -x -p "$port" \
    -o UserKnownHostsFile="$tmp/known_hosts" -o GlobalKnownHostsFile=/dev/null \
    -o StrictHostKeyChecking=yes -o PubkeyAuthentication=no \
    -o PreferredAuthentications=password -o NumberOfPasswordPrompts=1 \
    -o ClearAllForwardings=yes -o PermitLocalCommand=no -o UpdateHostKeys=no \
    -- "$user@$host" </dev/tty || status=$?
  return $status
}
