"""The store's queries, one module per aggregate; :class:`~qhpc_lab.scheduler.store.Store`
is all of them over one database."""
