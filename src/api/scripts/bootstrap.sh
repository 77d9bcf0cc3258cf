#!/usr/bin/env bash
# Sluice bootstrap: asks for your Sluice user name and password, makes sure your host is
# running, and opens an SSH session to it through Sluice's SSH proxy.
#   curl -sSf __BASE_URL__/v1/bootstrap/script | bash            (asks for the user name)
#   curl -sSf __BASE_URL__/v1/bootstrap/script | bash -s -- NAME  (or SLUICE_USER=NAME)
#
# Exit codes: 2 a required tool or the terminal is missing, 3 wrong user name or password,
# 4 you have no host, 5 refused (account disabled, host suspended or broken, several hosts),
# 6 too many attempts, 7 the host did not start, 8 Sluice unreachable or answered
# unexpectedly; otherwise the exit status of the SSH session.
SLUICE_URL='__BASE_URL__'

__COMMON__

main() {
  need_tools
  local user=${1:-${SLUICE_USER:-}}
  if [ -z "$user" ]; then
    IFS= read -r -p "Sluice user name: " user </dev/tty || die 2 "no input"
  fi
  read_secret "Password for $user: "
  printf '{"username":%s,"password":%s}' "$(json_string "$user")" "$(json_string "$REPLY")" >"$tmp/body"
  call POST "/v1/bootstrap/sessions" "$tmp/body"
  rm -f "$tmp/body"
  [ "$code" = 201 ] || fail_on
  local status_url shown='' status stage msg deadline=$((SECONDS + 300))
  status_url=$(checked "status URL" "$(field status_url "$resp")" '^/v1/bootstrap/tasks/[0-9a-f]{32}$') || exit
  while :; do
    call GET "$status_url"
    [ "$code" = 200 ] || fail_on
    status=$(field status "$resp")
    stage=$(field stage "$resp")
    msg=$(message "$resp")
    case $status in
      ready) printf 'sluice: %s\n' "$msg" >&2; break ;;
      failed) die 7 "$msg" ;;
    esac
    if [ "$stage: $msg" != "$shown" ]; then
      printf 'sluice: %s: %s\n' "$stage" "$msg" >&2
      shown="$stage: $msg"
    fi
    [ $SECONDS -lt $deadline ] || die 7 "your host did not start within 5 minutes"
    sleep 1
  done
  call GET "$status_url/handoff"
  [ "$code" = 200 ] || fail_on
  connect "$(field user "$resp")" "$(field host "$resp")" "$(field port "$resp")" \
    "$(field host_key "$resp")" "$(field ssh_pass "$resp")"
  exit $?
}

main "$@"
