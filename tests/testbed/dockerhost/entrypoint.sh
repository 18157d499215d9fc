#!/bin/sh
# A test bed Docker host: its own dockerd (data on the container's /var/lib/docker
# volume, extra daemon arguments in DOCKERD_ARGS) and, when AUTHORIZED_KEY is set,
# an sshd that lets in the key the test bed generated. The host key comes from the
# test bed too (HOST_KEY), so the controller's known_hosts is exact.
set -eu
if [ -n "${AUTHORIZED_KEY:-}" ]; then
  mkdir -p /run/sshd /root/.ssh
  chmod 700 /root/.ssh
  printf '%s\n' "$AUTHORIZED_KEY" >/root/.ssh/authorized_keys
  chmod 600 /root/.ssh/authorized_keys
  printf '%s' "$HOST_KEY" | base64 -d >/etc/ssh/ssh_host_ed25519_key
  chmod 600 /etc/ssh/ssh_host_ed25519_key
  rm -f /etc/ssh/ssh_host_rsa_key* /etc/ssh/ssh_host_ecdsa_key*
fi
ssh_wanted=${AUTHORIZED_KEY:+yes}
# The keys stay out of the environment of everything started from here.
unset AUTHORIZED_KEY HOST_KEY
# Its containers go in a cgroup of their own, apart from the outer daemon's.
# shellcheck disable=SC2086 # DOCKERD_ARGS is a list of arguments
dockerd --host unix:///var/run/docker.sock --cgroup-parent "/engineops-dockerhost-$(hostname)" ${DOCKERD_ARGS:-} \
  >/var/log/dockerd.log 2>&1 &
if [ -z "$ssh_wanted" ]; then
  wait
  exit $?
fi
exec /usr/sbin/sshd -D -e -o HostKey=/etc/ssh/ssh_host_ed25519_key
