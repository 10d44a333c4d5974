"""The `embed` stage: frozen backbones -> pre-projection features, original heads, embeddings.

`stage.embed_cohort` computes and stores them (torch, open_clip); `reader.load_embeddings` reads
them back with numpy only, which is all the later stages (attack, dp, umap) and the dashboard need.
"""

from engine.embed.reader import Embeddings, Heads, NotEmbeddedError, load_embeddings, load_heads

__all__ = ["Embeddings", "Heads", "NotEmbeddedError", "load_embeddings", "load_heads"]
