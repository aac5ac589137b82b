"""``--backend ray``: the same commands on a Ray cluster (serving, batch inference, training, RAG
ingest), through the same code as the local path. ``ray`` is imported inside functions only."""
