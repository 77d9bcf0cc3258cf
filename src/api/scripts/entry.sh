#!/usr/bin/env bash
# Sluice short link for host __SHORT__: asks for the host's SSH password, starts the host if
# it is stopped, and opens an SSH session through Sluice's SSH proxy.
#
# Exit codes: 2 a required tool or the terminal is missing, 3 wrong password, 4 no such host,
# 5 refused (account disabled, host suspended or broken), 6 too many attempts (locked for a
# while), 7 the host did not start, 8 Sluice unreachable or answered unexpectedly; otherwise
# the exit status of the SSH session.
SLUICE_URL='__BASE_URL__'
SHORT='__SHORT__'

__COMMON__

wait_for_task() {
  local task=$1 shown='' status progress deadline=$((SECONDS + 300))
  printf 'sluice: starting host %s' "$SHORT" >&2
  while [ $SECONDS -lt $deadline ]; do
    call GET "/v1/entry/$SHORT/tasks/$task"
    [ "$code" = 200 ] || fail_on
    status=$(field status "$resp")
    progress=$(message "$resp")
    case $status in
      succeeded) printf ' done\n' >&2; return 0 ;;
      failed) printf '\n' >&2; die 7 "host $SHORT did not start: $progress" ;;
    esac
    if [ -n "$progress" ] && [ "$progress" != "$shown" ]; then
      printf '\nsluice: %s' "$progress" >&2
      shown=$progress
    else
      printf '.' >&2
    fi
    sleep 1
  done
  printf '\n' >&2
  die 7 "host $SHORT did not start within 5 minutes"
}

main() {
  need_tools
  read_secret "Password for $SHORT: "
  printf '{"password":%s}' "$(json_string "$REPLY")" >"$tmp/body"
  local attempt
  for attempt in 1 2 3; do
    call POST "/v1/entry/$SHORT/auth" "$tmp/body"
    [ "$code" = 200 ] || fail_on
    case $(field status "$resp") in
      ready)
        rm -f "$tmp/body"
        connect "$(field ssh_user "$resp")" "$(field ssh_host "$resp")" \
          "$(field ssh_port "$resp")" "$(field host_key "$resp")" "$(field ssh_pass "$resp")"
        exit $?
        ;;
      starting)
        local task
        task=$(field task_id "$resp")
        if [ -n "$task" ]; then
          task=$(checked "task id" "$task" '^[0-9a-f-]{36}$') || exit
          wait_for_task "$task"
        else
          sleep 2
        fi
        ;;
      *) die 8 "unexpected answer from Sluice" ;;
    esac
  done
  die 7 "host $SHORT is not running yet; try again in a moment"
}

main "$@"
