"""Run an untrusted Python snippet in a throwaway microVM and print what it printed.

    python examples/sandbox/run.py 'print(6*7)'
    echo 'import os; print(os.uname())' | python examples/sandbox/run.py -

The VM has no share of the host, a fresh name, and is removed when the snippet ends (or
times out); the second run restores a warm snapshot instead of booting.
"""

from __future__ import annotations

import sys

import cove

SPEC = {"name": "sandbox", "packages": ["python3", "curl"], "memory": "256M"}


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    snippet = sys.stdin.read() if sys.argv[1] == "-" else sys.argv[1]
    try:
        with cove.sandbox(SPEC) as vm:
            vm.put_file("/sandbox/main.py", snippet.encode())
            result = vm.exec(["python3", "/sandbox/main.py"], user="nobody", cwd="/tmp",
                             timeout=30)
    except cove.ExecTimeout as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 124
    except cove.CoveError as error:
        print(f"sandbox: {error}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(result.stdout)
    sys.stderr.buffer.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
