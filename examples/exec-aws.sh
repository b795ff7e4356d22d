#!/bin/sh
# `cordon exec` with an AWS credential. The agent's credentials come from the environment
# (CORDON_ISSUER, CORDON_CLIENT_ID, CORDON_CLIENT_SECRET); the command gets no AWS keys at all,
# only AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN pointing at a
# local endpoint that fetches (and re-fetches) the session's STS credentials through the broker.
# When the command exits, the session is revoked.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cordon=${CORDON:-"node $here/../bin/cordon.js"}
exec $cordon exec --scope "tickets:read cred:reports-s3" --task "${TASK:-weekly-report}" --cred reports-s3 -- \
  node --import tsx "$here/aws-whoami.ts"
