#!/bin/sh
# Starts bearerbox, the fake SMSC and smsbox in one container, for trials.
set -eu
password=$(cat /run/secrets/CANHBAO_SECRET_KANNEL)
sed "s/SENDSMS_PASSWORD/${password}/" /etc/kannel/kannel.conf.in > /etc/kannel/kannel.conf
mkdir -p /var/log/kannel
bearerbox -v 1 /etc/kannel/kannel.conf &
sleep 1
/usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r 13010 -i 1 -m 0 'x y text nop' &
sleep 1
exec smsbox -v 1 /etc/kannel/kannel.conf
