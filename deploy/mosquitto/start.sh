#!/bin/sh
# Broker entry point (POSIX sh: the official image is Alpine, others Debian). mosquitto reads
# its password and ACL files after dropping to the "mosquitto" user, so copies owned by that
# user are made here; the credentials step left both root-only in its volume (the ACL lists
# the racks of the deployed layout, so it is made there too).
# MOSQUITTO_EXTRA_CONF names more configuration files to append (the TLS listener).
set -eu
run=/mosquitto/run
mkdir -p "$run"
cp /mosquitto/auth/passwd "$run/passwd"
cp /mosquitto/auth/acl "$run/acl"
cat /mosquitto/config/mosquitto.conf > "$run/mosquitto.conf"
for extra in ${MOSQUITTO_EXTRA_CONF:-}; do
  cat "$extra" >> "$run/mosquitto.conf"
done
if [ -d /mosquitto/certs ]; then
  # the key must be readable by the broker after it drops privileges
  mkdir -p "$run/certs"
  cp /mosquitto/certs/* "$run/certs/"
  sed -i "s#/mosquitto/certs/#$run/certs/#" "$run/mosquitto.conf"
fi
chown -R mosquitto:mosquitto "$run" /mosquitto/data
chmod 0700 "$run"
chmod -R go-rwx "$run"
exec mosquitto -c "$run/mosquitto.conf"
