#!/usr/bin/env bash
# Install the Debian packages wsfixture needs, only those that are missing.
# Run as root on Debian 12. `make test` and `make demo` call it; it is idempotent and quick
# when everything is already there.
set -euo pipefail

PACKAGES=(
  python3 python3-venv            # the project venv
  systemd-container               # systemd-nspawn: container workspaces
  mmdebstrap                      # builds the base image from Debian's packages
  dnsmasq-base                    # DNS for the lab network
  openssh-client                  # ssh, ssh-keygen
  iproute2                        # ip netns, bridges, veth, tap
  slirp4netns nftables            # internet for a lab: a userspace uplink, NAT inside the lab
  qemu-system-x86 qemu-utils      # VM workspaces (qemu-img, virtiofsd)
  e2fsprogs                       # mkfs.ext4 -d for the VM root image
  cpio zstd                       # the VM initrd
  nix-bin                         # nix-instantiate: checks nix/*.nix
  make
)

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-host: must run as root (it installs Debian packages and creates network namespaces)" >&2
  exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup-host: all Debian packages present"
fi

# QEMU drops to this system user once it has opened what it needs (-runas).
if ! getent passwd wsfixture-qemu >/dev/null; then
  useradd --system --no-create-home --shell /usr/sbin/nologin wsfixture-qemu
  echo "setup-host: created the system user wsfixture-qemu"
fi
