# csdeploy lab VM template "debian-12": a bare Debian 12 cloud image as a container.
# systemd is PID 1, cloud-init (NoCloud) configures the VM at first boot, sshd serves it.
# No Docker: the rollout installs it for real, as on a fresh cloud VM.
ARG BASE=csdeploy-lab/debian:bookworm
FROM ${BASE}
ENV container=docker DEBIAN_FRONTEND=noninteractive
# policy-rc.d: packages must not try to start services while the image is built.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends systemd systemd-sysv dbus openssh-server cloud-init \
      iproute2 ca-certificates e2fsprogs util-linux curl sudo procps kmod udev \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && rm -f /etc/ssh/ssh_host_*
COPY rootfs/ /
# Units that have no job in a container VM (no consoles, no real /sys, no clock to set).
RUN systemctl mask getty@tty1.service serial-getty@.service console-getty.service \
      systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
      systemd-timesyncd.service systemd-remount-fs.service sys-kernel-config.mount \
 && systemctl enable csdeploy-lab-devices.service csdeploy-lab-hostkeys.service csdeploy-lab-ca.service \
 && : >/etc/machine-id && rm -f /var/lib/dbus/machine-id \
 && rm -rf /var/lib/cloud/* /var/log/cloud-init*
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
