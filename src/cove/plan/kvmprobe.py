"""Time a tiny real-mode loop in a KVM vCPU: run as a child process with a hard deadline.

On a host with working hardware virtualization the loop takes about a millisecond; where
KVM is emulated (kvm_pvm) it takes about a second. Prints the elapsed seconds.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
import sys
import time

KVM_CREATE_VM = 0xAE01
KVM_GET_VCPU_MMAP_SIZE = 0xAE04
KVM_CREATE_VCPU = 0xAE41
KVM_RUN = 0xAE80
KVM_SET_USER_MEMORY_REGION = 0x4020AE46
KVM_SET_REGS = 0x4090AE82
KVM_GET_SREGS = 0x8138AE83
KVM_SET_SREGS = 0x4138AE84
KVM_EXIT_HLT = 5
SREGS_SIZE = 312
CODE_ADDRESS = 0x1000
ITERATIONS = 1_000_000
# mov ecx, ITERATIONS; spin: dec ecx; jnz spin; hlt   (16-bit real mode)
CODE = b"\x66\xb9" + struct.pack("<I", ITERATIONS) + b"\x66\x49\x75\xfc\xf4"


def probe() -> float:
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
    memory = mmap.mmap(-1, 0x10000)
    memory[CODE_ADDRESS:CODE_ADDRESS + len(CODE)] = CODE
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    region = struct.pack("<IIQQQ", 0, 0, 0, 0x10000, address)
    fcntl.ioctl(vm, KVM_SET_USER_MEMORY_REGION, region)
    vcpu = fcntl.ioctl(vm, KVM_CREATE_VCPU, 0)
    run_size = fcntl.ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0)
    run = mmap.mmap(vcpu, run_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sregs = bytearray(fcntl.ioctl(vcpu, KVM_GET_SREGS, bytes(SREGS_SIZE)))
    struct.pack_into("<Q", sregs, 0, 0)  # cs.base
    struct.pack_into("<H", sregs, 12, 0)  # cs.selector
    fcntl.ioctl(vcpu, KVM_SET_SREGS, bytes(sregs))
    regs = [0] * 18
    regs[16], regs[17] = CODE_ADDRESS, 0x2  # rip, rflags
    fcntl.ioctl(vcpu, KVM_SET_REGS, struct.pack("<18Q", *regs))
    start = time.perf_counter()
    fcntl.ioctl(vcpu, KVM_RUN, 0)
    elapsed = time.perf_counter() - start
    (reason,) = struct.unpack_from("<I", run, 8)
    if reason != KVM_EXIT_HLT:
        raise RuntimeError(f"unexpected KVM exit reason {reason}")
    return elapsed


if __name__ == "__main__":
    try:
        print(f"{probe():.6f}")
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
