"""wrk, driven from Python: a Lua script that posts a new address per request and counts
the answers by status, one run, and its output parsed (requests/s, latency percentiles).
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
from pathlib import Path
from typing import Any

WRK_THREADS = 2
INSTALL_WRK = "wrk is not installed: apt-get install -y wrk (https://github.com/wg/wrk)"

#: Every request a new address: b<run>-<wrk thread>-<counter>-<random>@example.com.
#: Statuses are counted per thread and printed by done(), so a failure says what it was.
LUA = """
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end
function init(args)
  math.randomseed(os.time() * 1000 + id)
  statuses, counter = {}, 0
end
function request()
  if METHOD == "GET" then return wrk.format("GET", PATH) end
  counter = counter + 1
  local body = string.format("email=b%s-%d-%d-%06x%%40example.com",
                             TOKEN, id, counter, math.random(0, 0xffffff))
  return wrk.format("POST", PATH,
                    {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("status %d: %d\\n", status, n))
    end
  end
end
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError(INSTALL_WRK)
    return path


def lua_script(folder: Path, method: str, path: str, token: str) -> Path:
    script = folder / f"{method.lower()}-{token}.lua"
    head = f'METHOD, PATH, TOKEN = "{method}", "{path}", "{token}"\n'
    script.write_text(head + LUA)
    return script


def wrk(url: str, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    """One wrk run: requests, requests/s, latency percentiles (ms), statuses, wrk's CPU."""
    args = [require_wrk(), f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s",
            "--latency", "-s", str(script), url]  # fmt: skip
    before = _children_cpu()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout}")
    result = parse_wrk(proc.stdout)
    result["wrk_cpu_s"] = _children_cpu() - before  # the only child waited for meanwhile
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_wrk(out: str) -> dict[str, Any]:
    def number(pattern: str) -> float:
        found = re.search(pattern, out)
        if found is None:
            raise RuntimeError(f"wrk's output has no {pattern!r}:\n{out}")
        return float(found.group(1))

    latency = {
        int(p): float(v) * _UNITS[u]
        for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.M)
    }
    statuses: dict[int, int] = {}
    for status, n in re.findall(r"^status (\d+): (\d+)$", out, re.M):  # one line per thread
        statuses[int(status)] = statuses.get(int(status), 0) + int(n)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(number(r"(\d+) requests in")),
        "rps": number(r"Requests/sec:\s+([\d.]+)"),
        "latency_ms": latency,
        "p99_ms": latency[99],
        "statuses": statuses,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "output": out,
    }


def check_answers(what: str, result: dict[str, Any]) -> None:
    """Fail loudly on any refused or broken request: then the numbers mean nothing."""
    wrong = {s: n for s, n in result["statuses"].items() if s != 200}
    if wrong or result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(
            f"{what}: {result['non_2xx']} non-2xx answers {wrong or ''}, "
            f"{result['socket_errors']} socket errors, of {result['requests']} requests:\n"
            f"{result['output']}"
        )
