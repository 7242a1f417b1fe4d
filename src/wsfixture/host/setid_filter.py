"""A seccomp filter that refuses to make setuid or setgid files, installed in a child process
before it execs.

Why: a share is the workspace's directory on the host. The kernel lets a file's owner set
its setuid bit, and no mount option stops that on the host's side, so a workspace's root
(or user) could plant a setuid binary there that a host process might run. Refusing the
system calls that set those bits is the one place that holds for every file system. Two
strengths:

- ``setid``: chmod/fchmod/fchmodat(2) with S_ISUID or S_ISGID, and creating a file, directory
  or node with either bit, fail with EPERM; ``openat2`` (its mode is behind a pointer a
  filter cannot read) and ``io_uring_setup`` (its opens bypass seccomp) say ENOSYS, so
  callers fall back to the calls above. A container runs under this one, whole: its root may
  still do anything else to its own tree.
- ``share``: the same, and ``mknod`` of anything but a regular file (device nodes, FIFOs,
  sockets) fails too. For a share daemon (virtiofsd), which only ever serves shares.

``installer`` gives the ``preexec_fn`` that installs it in a child before its exec. The
filter is installed without no_new_privs, which needs root: setuid programs inside (doas)
still work.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable

# seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (the low half first: little-endian).
_NR, _ARCH = 0, 4


def _arg(index: int) -> int:
    return 16 + 8 * index


# Classic BPF opcodes.
_LD_W_ABS, _JEQ_K, _JSET_K, _AND_K, _RET_K = 0x20, 0x15, 0x45, 0x54, 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
X32_SYSCALL_BIT = 0x40000000

SETID_BITS = 0o6000  # S_ISUID | S_ISGID
O_CREAT, O_TMPFILE = 0o100, 0o20000000  # __O_TMPFILE: O_TMPFILE without O_DIRECTORY
S_IFMT, S_IFREG = 0o170000, 0o100000

# Per architecture (AUDIT_ARCH_*): syscall -> (its mode argument, its flags argument or
# None: the mode counts only when the flags create). i386 is there because an x86_64
# kernel runs its binaries, with their own numbers.
Rule = tuple[int, int | None]
_X86_64 = {
    "chmod": (90, 1, None), "fchmod": (91, 1, None), "fchmodat": (268, 2, None),
    "fchmodat2": (452, 2, None), "creat": (85, 1, None), "open": (2, 2, 1),
    "openat": (257, 3, 2), "mkdir": (83, 1, None), "mkdirat": (258, 2, None),
    "mknod": (133, 1, None), "mknodat": (259, 2, None), "openat2": (437, -1, None),
    "io_uring_setup": (425, -1, None),
}  # fmt: skip
_I386 = {
    "chmod": (15, 1, None), "fchmod": (94, 1, None), "fchmodat": (306, 2, None),
    "fchmodat2": (452, 2, None), "creat": (8, 1, None), "open": (5, 2, 1),
    "openat": (295, 3, 2), "mkdir": (39, 1, None), "mkdirat": (296, 2, None),
    "mknod": (14, 1, None), "mknodat": (297, 2, None), "openat2": (437, -1, None),
    "io_uring_setup": (425, -1, None),
}  # fmt: skip
_AARCH64 = {
    "fchmod": (52, 1, None), "fchmodat": (53, 2, None), "fchmodat2": (452, 2, None),
    "openat": (56, 3, 2), "mkdirat": (34, 2, None), "mknodat": (33, 2, None),
    "openat2": (437, -1, None), "io_uring_setup": (425, -1, None),
}  # fmt: skip
AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, AUDIT_ARCH_AARCH64 = 0xC000003E, 0x40000003, 0xC00000B7
NATIVE = {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}
TABLES = {AUDIT_ARCH_X86_64: _X86_64, AUDIT_ARCH_I386: _I386, AUDIT_ARCH_AARCH64: _AARCH64}
STRENGTHS = ("setid", "share")
_NODES = ("mknod", "mknodat")


class _Assembler:
    """Classic BPF with forward labels: each jump names where it goes."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for at, (code, jt, jf, k) in enumerate(self.code):
            out += struct.pack("HBBI", code, self._offset(jt, at), self._offset(jf, at), k)
        return bytes(out)

    def _offset(self, target: str | int, at: int) -> int:
        offset = target if isinstance(target, int) else self.labels[target] - at - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"BPF jump of {offset} at instruction {at}: out of range")
        return offset


def program(strength: str, arch: int) -> bytes:
    """The filter for ``arch`` (its native table and, on x86_64, i386's), as the bytes of a
    ``sock_filter`` array."""
    if strength not in STRENGTHS:
        raise ValueError(f"unknown filter strength {strength!r}; allowed: {STRENGTHS}")
    archs = [arch, AUDIT_ARCH_I386] if arch == AUDIT_ARCH_X86_64 else [arch]
    asm = _Assembler()
    eperm = SECCOMP_RET_ERRNO | errno.EPERM
    enosys = SECCOMP_RET_ERRNO | errno.ENOSYS
    asm.op(_LD_W_ABS, _ARCH)
    for a in archs:
        asm.op(_JEQ_K, a, f"arch{a}", 0)
    asm.op(_RET_K, SECCOMP_RET_ALLOW)  # an architecture this kernel cannot run for us
    for a in archs:
        asm.label(f"arch{a}")
        asm.op(_LD_W_ABS, _NR)
        if a == AUDIT_ARCH_X86_64:
            asm.op(_JSET_K, X32_SYSCALL_BIT, 0, 1)  # x32's numbers: not for us
            asm.op(_RET_K, enosys)
        for name, (nr, _, _) in TABLES[a].items():
            asm.op(_JEQ_K, nr, f"{a}:{name}", 0)
        asm.op(_RET_K, SECCOMP_RET_ALLOW)
        for name, (_, mode_arg, flags_arg) in TABLES[a].items():
            # Each rule ends in its own returns: every jump stays short (BPF's are 8-bit).
            asm.label(f"{a}:{name}")
            if mode_arg < 0:
                asm.op(_RET_K, enosys)
                continue
            if flags_arg is not None:
                asm.op(_LD_W_ABS, _arg(flags_arg))
                asm.op(_JSET_K, O_CREAT | O_TMPFILE, 1, 0)
                asm.op(_RET_K, SECCOMP_RET_ALLOW)
            asm.op(_LD_W_ABS, _arg(mode_arg))
            asm.op(_JSET_K, SETID_BITS, 0, 1)
            asm.op(_RET_K, eperm)
            if strength == "share" and name in _NODES:
                asm.op(_AND_K, S_IFMT)
                asm.op(_JEQ_K, 0, 2, 0)
                asm.op(_JEQ_K, S_IFREG, 1, 0)
                asm.op(_RET_K, eperm)
            asm.op(_RET_K, SECCOMP_RET_ALLOW)
    return asm.assemble()


def native_arch() -> int:
    machine = os.uname().machine
    if machine not in NATIVE:
        raise OSError(f"no setid filter for {machine}; known: {', '.join(NATIVE)}")
    return NATIVE[machine]


class _Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
_libc = ctypes.CDLL(None, use_errno=True)


def installer(strength: str) -> Callable[[], None]:
    """A ``preexec_fn`` that installs the filter in the child before it execs: the
    program is built here, in the parent, so the child only makes one system call (a fork
    of a large Python costs ~3 ms here; a Python launcher's start ~80 ms)."""
    code = program(strength, native_arch())
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = _Fprog(len(code) // 8, ctypes.addressof(buffer))

    def install() -> None:
        # ``buffer`` is referenced here, so it lives as long as the closure.
        if _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_SET_SECCOMP) failed ({len(buffer)})")

    return install
