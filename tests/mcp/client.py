"""An MCP client for Sluice's tests, on the official MCP Python SDK (`mcp` from PyPI) over
Streamable HTTP. Usage: client.py URL TOKEN SCENARIO [ARG]. Prints one JSON object on stdout
with what it saw; the Rust test asserts on it (and on Sluice's rows and events)."""

import json
import sys
import time

import anyio
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client


def structured(result):
    """The JSON answer of a tool call (structured content, else the text)."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def wait(session, task_id):
    """Polls a task until it finishes; answers its status."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        task = structured(await session.call_tool("task_get", {"id": task_id}))
        if task["status"] in ("succeeded", "failed"):
            return task["status"]
        await anyio.sleep(0.2)
    return "timeout"


async def run(url, token, scenario, arg):
    out = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=60) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                out["server"] = init.server_info.name
                tools = await session.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                out["destructive"] = sorted(
                    t.name for t in tools.tools if t.annotations and t.annotations.destructive_hint
                )
                out["inputs"] = {
                    t.name: sorted((t.input_schema or {}).get("properties", {}).keys()) for t in tools.tools
                }
                if scenario == "create-host":
                    user = await session.call_tool("user_create", {"username": arg})
                    out["user_error"] = bool(user.is_error)
                    user = structured(user)
                    out["user_id"] = user["id"]
                    made = await session.call_tool("host_create", {"user_id": user["id"]})
                    out["host_error"] = bool(made.is_error)
                    made = structured(made)
                    out["host_id"] = made["id"]
                    out["short_id"] = made["short_id"]
                    out["has_ssh_password"] = bool(made.get("ssh_password"))
                    task = None
                    deadline = time.monotonic() + 240
                    while time.monotonic() < deadline:
                        task = structured(await session.call_tool("task_get", {"id": made["task_id"]}))
                        if task["status"] in ("succeeded", "failed"):
                            break
                        await anyio.sleep(1)
                    out["task_status"] = task["status"]
                    host = structured(await session.call_tool("host_get", {"host": made["short_id"]}))
                    out["host_status"] = host["status"]
                    bad = await session.call_tool("host_get", {"host": "nosuchid"})
                    out["unknown_host_error"] = bool(bad.is_error)
                    out["unknown_host_message"] = structured(bad)["error"]
                    invalid = await session.call_tool("host_create", {"user_id": "not-a-uuid", "cpus": 99})
                    out["invalid_fields"] = structured(invalid).get("fields", {})
                elif scenario == "parity":
                    # The scenario every face plays: a user, a host for them, stop it.
                    user = structured(await session.call_tool("user_create", {"username": arg}))
                    made = structured(await session.call_tool("host_create", {"user_id": user["id"]}))
                    await wait(session, made["task_id"])
                    stop = structured(await session.call_tool("host_stop", {"host": made["id"]}))
                    await wait(session, stop["task_id"])
                    out["user_id"] = user["id"]
                    out["host_id"] = made["id"]
                elif scenario == "operate":
                    # An operator's round on one host and its owner: logs, suspend (a start is
                    # then refused), unsuspend, the host's tasks, a bad filter, the account by
                    # name, its expiry set and cleared, recordings, and the account deleted.
                    short, username = arg.split(",")
                    status = structured(await session.call_tool("server_status", {}))
                    out["docker_reachable"] = status["docker"]["reachable"]
                    logs = structured(await session.call_tool("host_logs", {"host": short, "tail": 5}))
                    out["log_lines"] = len(logs["lines"])
                    sus = structured(await session.call_tool("host_suspend", {"host": short}))
                    out["suspend_task"] = await wait(session, sus["task_id"])
                    out["suspended"] = structured(await session.call_tool("host_get", {"host": short}))["status"]
                    start = await session.call_tool("host_start", {"host": short})
                    out["start_refused"] = bool(start.is_error)
                    out["start_error"] = structured(start).get("error")
                    out["unsuspended"] = structured(await session.call_tool("host_unsuspend", {"host": short}))["status"]
                    stopped = structured(await session.call_tool("hosts_list", {"status": "stopped"}))
                    out["stopped_hosts"] = [h["short_id"] for h in stopped["hosts"]]
                    tasks = structured(await session.call_tool("tasks_list", {"host": short}))
                    out["task_kinds"] = [t["kind"] for t in tasks["tasks"]]
                    bad = await session.call_tool("tasks_list", {"status": "sleeping"})
                    out["bad_status_fields"] = structured(bad).get("fields", {})
                    out["user_name"] = structured(await session.call_tool("user_get", {"user": username}))["username"]
                    exp = await session.call_tool("user_set_expiry", {"user": username, "expires_at": "2031-05-01T08:00:00Z"})
                    out["expires_at"] = structured(exp)["expires_at"]
                    never = await session.call_tool("user_set_expiry", {"user": username, "expires_at": None})
                    out["expires_never"] = structured(never)["expires_at"]
                    out["recordings"] = structured(await session.call_tool("recordings_list", {"host": short}))["total"]
                    egress = structured(await session.call_tool("egress_get", {"id": "mcp-out"}))
                    out["egress_label"] = egress["label"]
                    out["egress_secret_shown"] = "ss-password-secret" in json.dumps(egress)
                    twin = await session.call_tool("egress_get", {"id": "twin"})
                    out["twin_refused"] = bool(twin.is_error)
                    out["twin_error"] = structured(twin).get("error")
                    gone = structured(await session.call_tool("user_delete", {"user": username}))
                    out["delete_task"] = await wait(session, gone["task_ids"][0])
                elif scenario == "beyond-abilities":
                    try:
                        await session.call_tool("host_create", {"user_id": arg})
                        out["host_create"] = "allowed"
                    except Exception as e:  # the SDK raises the JSON-RPC error
                        out["host_create"] = "refused"
                        out["host_create_error"] = str(e)
                    listed = structured(await session.call_tool("hosts_list", {}))
                    out["hosts_listed"] = listed["total"]
    print(json.dumps(out))


if __name__ == "__main__":
    anyio.run(run, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
