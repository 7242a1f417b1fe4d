"""The QEMU backend: ``backend`` (lifecycle) over pure ``argv``, with ``template`` (make
and save) and ``clone`` (restore, hot-plug, identity) each taking a narrow Protocol of
the VM, ``channel`` (the guest port), ``disk`` (qcow2) and ``qmp``."""

from wsfixture.backends.qemu.backend import QemuBackend

__all__ = ["QemuBackend"]
