"""The control plane under /_sandbox/, for a sandbox in another process (no auth, no faults).

GET /_sandbox/stats reads the counters; GET or POST /_sandbox/faults reads or changes the
`Faults` (a JSON object of the fields to change); POST /_sandbox/script queues scripted
faults (`{"target": "api"|"download", "kinds": [...]}`); POST /_sandbox/reset resets the
counters and forgets the scripted faults not served yet.
"""

import dataclasses

from aiohttp import web

from sandbox.answers import detail
from sandbox.state import STATE


async def control_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].counters.snapshot())


async def control_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.method == "POST":
        try:
            changes = await request.json()
            if not isinstance(changes, dict):
                raise ValueError("expected a JSON object of fault settings")
            state.set_faults(changes)
        except (ValueError, TypeError) as exc:
            return detail(400, str(exc))
    return web.json_response(dataclasses.asdict(state.faults))


async def control_script(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("kinds"), list):
            raise ValueError('expected {"target": "api"|"download", "kinds": [...]}')
        request.app[STATE].plan.script(body.get("target"), body["kinds"])
    except (ValueError, TypeError) as exc:
        return detail(400, str(exc))
    return web.json_response({"ok": True})


async def control_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset(scripts=True)
    return web.json_response({"ok": True})
