"""Training the BLT on the corpus: retrieval-conditioned training data (training.data) and the `train` /
`eval bpb` command bodies (training.commands). Above ingest, index and blt; the assistant (rag) reaches it
only through its CLI."""
