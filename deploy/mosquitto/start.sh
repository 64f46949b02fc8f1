#!/bin/sh
# Broker entry point (POSIX sh: the official image is Alpine, others Debian). mosquitto reads
# its password and ACL files after dropping to the "mosquitto" user, so copies owned by that
# user are made here; the credentials step left the password file root-only in its volume.
# MOSQUITTO_EXTRA_CONF names more configuration files to append (the TLS listener).
set -eu
run=/mosquitto/run
mkdir -p "$run"
cp /mosquitto/auth/passwd "$run/passwd"
cp /mosquitto/config/acl "$run/acl"
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
