"""``python -m qhpc_lab.wire > labextension/src/generated.ts``: the sidebar's types and facts."""

from qhpc_lab.wire.typescript import typescript_module

print(typescript_module(), end="")
