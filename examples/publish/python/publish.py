"""Publish one Chapar event from Python with nats-py (pip install nats-py)
and wait for JetStream's ack: python3 publish.py (NATS_URL picks the server)."""

import asyncio
import json
import os
import uuid

import nats


async def main():
    nc = await nats.connect(os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    try:
        js = nc.jetstream()
        # A fresh id per event; keep it if you may retry the publish:
        # JetStream drops a re-published duplicate with the same Nats-Msg-Id.
        event_id = str(uuid.uuid4())
        envelope = {
            "specversion": "1.0",
            "id": event_id,
            "source": "shop-api",
            "type": "chapar.track",
            "subject": "user-42",
            "data": {
                "name": "order_paid",
                "properties": {"orderId": "A-1001", "items": 3},
                "user": {
                    "id": "user-42",
                    "chabokInstallationId": "inst-9f2c",
                    "metrixUserId": "1415211453000-6513894",
                    "metrixSessionId": "sess-77",
                    "advertisingId": "38400000-8cf0-11bd-b23e-10b96e40000d",
                },
            },
        }
        ack = await js.publish(
            "chapar.events.track",
            json.dumps(envelope).encode(),
            headers={"Nats-Msg-Id": event_id, "Content-Type": "application/cloudevents+json"},
            timeout=10,
        )
        print(f"published {event_id} as {ack.stream} #{ack.seq}")
    finally:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(main())
