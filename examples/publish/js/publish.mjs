// Publish one Chapar event from Node.js and wait for JetStream's ack:
// npm ci && node publish.mjs (NATS_URL picks the server).
import { randomUUID } from "node:crypto";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";

const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
try {
  const js = jetstream(nc);
  // A fresh id per event; keep it if you may retry the publish:
  // JetStream drops a re-published duplicate with the same msgID.
  const id = randomUUID();
  const envelope = {
    specversion: "1.0",
    id,
    source: "shop-api",
    type: "chapar.track",
    subject: "user-42",
    data: {
      name: "order_paid",
      properties: { orderId: "A-1001", items: 3 },
      user: {
        id: "user-42",
        chabokInstallationId: "inst-9f2c",
        metrixUserId: "1415211453000-6513894",
        metrixSessionId: "sess-77",
        advertisingId: "38400000-8cf0-11bd-b23e-10b96e40000d",
      },
    },
  };
  const ack = await js.publish("chapar.events.track", JSON.stringify(envelope), {
    msgID: id, // sent as the Nats-Msg-Id header
    timeout: 10_000,
  });
  console.log(`published ${id} as ${ack.stream} #${ack.seq}`);
} finally {
  await nc.close();
}
