"""Text side of the frozen description embeddings: the JAX BERT-family encoder
(``text.encoder``) and the embedding cache keyed by (encoder identity, text hash)
(``text.cache``)."""
