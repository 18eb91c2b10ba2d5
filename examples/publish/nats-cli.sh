#!/usr/bin/env bash
# Publish one Chapar event with the nats CLI and wait for JetStream's ack
# (go install github.com/nats-io/natscli/nats@v0.5.0). NATS_URL picks the
# server, as for every nats command.
set -euo pipefail

# A fresh id per event; keep it if you may retry the publish: JetStream
# drops a re-published duplicate with the same Nats-Msg-Id.
id="$(date -u +%Y%m%dT%H%M%S)-$$-$RANDOM"

nats pub chapar.events.track --jetstream \
  --header "Nats-Msg-Id:$id" --header "Content-Type:application/cloudevents+json" \
  '{"specversion":"1.0","id":"'"$id"'","source":"billing","type":"chapar.track","subject":"user-42",
    "data":{"name":"order_paid","properties":{"orderId":"A-1001","items":3},
            "user":{"id":"user-42","chabokInstallationId":"inst-9f2c","metrixUserId":"1415211453000-6513894",
                    "metrixSessionId":"sess-77","advertisingId":"38400000-8cf0-11bd-b23e-10b96e40000d"}}}'
echo "published $id"
