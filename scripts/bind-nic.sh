#!/usr/bin/env bash
# Hand a NIC to DPDK (vfio-pci) or give it back to its kernel driver; wraps dpdk-devbind.py
# (Debian package `dpdk`).
#
#   scripts/bind-nic.sh status
#   scripts/bind-nic.sh bind PCI_ADDRESS          e.g. 0000:01:00.0 -> vfio-pci
#   scripts/bind-nic.sh unbind PCI_ADDRESS DRIVER e.g. 0000:01:00.0 ixgbe
#
# Binding takes the interface away from the kernel: never bind the NIC you are logged in
# through. vfio-pci needs the IOMMU on (intel_iommu=on / amd_iommu=on on the kernel command
# line); without one, `modprobe vfio enable_unsafe_noiommu_mode=1` works at your own risk.
set -euo pipefail

DEVBIND=$(command -v dpdk-devbind.py || command -v dpdk-devbind || true)
[ -n "$DEVBIND" ] || { echo "error: dpdk-devbind.py not found (apt-get install dpdk)" >&2; exit 1; }

case "${1:-}" in
    status) "$DEVBIND" --status-dev net ;;
    bind)
        pci=${2:?usage: $0 bind PCI_ADDRESS}
        modprobe vfio-pci
        if ! compgen -G "/sys/kernel/iommu_groups/*" >/dev/null; then
            echo "warning: no IOMMU groups: enable the IOMMU, or vfio's no-IOMMU mode" >&2
        fi
        "$DEVBIND" --bind=vfio-pci "$pci"
        "$DEVBIND" --status-dev net | grep -F "$pci" || true
        ;;
    unbind)
        pci=${2:?usage: $0 unbind PCI_ADDRESS DRIVER}
        drv=${3:?usage: $0 unbind PCI_ADDRESS DRIVER}
        "$DEVBIND" --bind="$drv" "$pci"
        ;;
    *)
        echo "usage: $0 status | bind PCI_ADDRESS | unbind PCI_ADDRESS DRIVER" >&2
        exit 2
        ;;
esac
