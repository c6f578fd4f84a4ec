"""Stand-ins for what cannot exist here, speaking the real interfaces: the emulated QPU behind
Pasqal's on-premises QPU API (``qpu_api``, ``qhpc qpu serve``)."""

RESULT_FORMATS = ("json", "python")
"""How the stand-in QPU writes a job's ``result`` text: JSON, or the text of a Python dict
literal (as Warden's own QPU mock writes it; a driver must read both)."""
