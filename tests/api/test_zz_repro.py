import asyncio, time
import pytest
pytestmark = pytest.mark.asyncio(loop_scope="module")

async def test_repro(api):
    ids = await api.incidents(10)
    for i, iid in enumerate(ids):
        t = time.time()
        st, body, _ = await api.call("POST", f"/api/v1/incidents/{iid}/ack", scope="ack",
                                     data=b'{"by": "\\ud800x"}' if i % 2 == 0 else b'{"by": "ok"}',
                                     headers={"Content-Type": "application/json"})
        print(i, st, round(time.time() - t, 2), flush=True)
    t = time.time()
    more = await api.incidents(3)
    print("more", more, round(time.time() - t, 2))
