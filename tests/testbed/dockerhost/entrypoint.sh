#!/bin/sh
# A test bed Docker host: its own dockerd (data on the container's /var/lib/docker
# volume) and an sshd that lets in the key the test bed generated. The host key
# comes from the test bed too, so the controller's known_hosts is exact.
set -eu
mkdir -p /run/sshd /root/.ssh
chmod 700 /root/.ssh
printf '%s\n' "$AUTHORIZED_KEY" >/root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
printf '%s' "$HOST_KEY" | base64 -d >/etc/ssh/ssh_host_ed25519_key
chmod 600 /etc/ssh/ssh_host_ed25519_key
rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*
# The keys stay out of the environment of everything started from here.
unset AUTHORIZED_KEY HOST_KEY
# Its containers go in a cgroup of their own, apart from the outer daemon's.
dockerd --host unix:///var/run/docker.sock --cgroup-parent "/engineops-dockerhost-$(hostname)" \
  >/var/log/dockerd.log 2>&1 &
exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key
