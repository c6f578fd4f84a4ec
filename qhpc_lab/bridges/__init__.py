"""Front-ends into the quantum SDKs, over the client: code written for an SDK's own remote API
runs through qhpc_lab's discovery, device checks, queue and emulator fallback.

A Pulser ``RemoteConnection`` (:mod:`qhpc_lab.bridges.pulser`) and a Qiskit ``BaseSamplerV2``
(:mod:`qhpc_lab.bridges.qiskit`). The conversions out of the SDKs (analog Qiskit and Qadence
circuits to Pulser, ...) are the programs layer's: :func:`qhpc_lab.programs.to_program`.
"""
