"""Document indexing: load with docling, chunk, embed, store, and search.

The logic lives in plain modules (``load``, ``chunking``, ``embed``, ``store``, ``search``, ``hopsworks_store``) that
the KFP wrappers in ``component.py`` call; the retriever predictor imports ``embed`` and ``search`` directly.
"""
