{{/* Scripts of the MongoDB init Job, as ConfigMap data. */}}
{{- define "relayq.mongodbInitScripts" -}}
init.sh: |
  #!/bin/sh
  set -eu
  first="${MEMBERS%%,*}"
  # With TLS_CA_FILE: TLS to every member, checking its certificate and name.
  tls=""
  if [ -n "${TLS_CA_FILE:-}" ]; then tls="--tls --tlsCAFile ${TLS_CA_FILE}"; fi
  # Wait for the first member, then initiate the set from it alone: the
  # others already hold the root user the entrypoint wrote, and a set can
  # only be initiated over members without data. rs.add() syncs them anew.
  # The root password never appears on a command line (any process on the
  # node can read those): each script authenticates from ROOT_PASSWORD in
  # its environment.
  # shellcheck disable=SC2086 # tls is a list of flags
  until mongosh --quiet $tls "mongodb://${first}/admin?directConnection=true" \
      --eval 'db.auth("root", process.env.ROOT_PASSWORD); db.adminCommand({ping: 1}).ok' \
      >/dev/null 2>&1; do
    echo "waiting for ${first}"; sleep 2
  done
  # shellcheck disable=SC2086
  mongosh --quiet $tls "mongodb://${first}/admin?directConnection=true" /scripts/initiate.js
  # shellcheck disable=SC2086
  mongosh --quiet $tls "mongodb://${MEMBERS}/admin?replicaSet=${REPLICA_SET}" /scripts/members.js
initiate.js: |
  db.getSiblingDB("admin").auth("root", process.env.ROOT_PASSWORD);
  const hosts = process.env.MEMBERS.split(",");
  try {
    rs.status();
    print("replica set already initiated");
  } catch (e) {
    if (e.codeName !== "NotYetInitialized") throw e;
    rs.initiate({_id: process.env.REPLICA_SET, members: [{_id: 0, host: hosts[0]}]});
    print("replica set initiated on " + hosts[0]);
  }
  while (!db.hello().isWritablePrimary) sleep(1000);
members.js: |
  db.getSiblingDB("admin").auth("root", process.env.ROOT_PASSWORD);
  const hosts = process.env.MEMBERS.split(",");
  const known = rs.conf().members.map((m) => m.host);
  for (const host of hosts) {
    if (!known.includes(host)) {
      rs.add({host: host});
      print("added " + host);
    }
  }
  const admin = db.getSiblingDB("admin");
  const user = process.env.APP_USER;
  const roles = [{role: "readWrite", db: process.env.APP_DATABASE}];
  if (admin.getUser(user) === null) {
    admin.createUser({user: user, pwd: process.env.APP_PASSWORD, roles: roles}, {w: "majority"});
    print("created user " + user);
  } else {
    // Keeps the password in step with the Secret after a rotation.
    admin.updateUser(user, {pwd: process.env.APP_PASSWORD, roles: roles}, {w: "majority"});
    print("updated user " + user);
  }
{{- end }}
