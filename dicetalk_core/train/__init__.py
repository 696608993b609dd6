"""Training side of DICE-Talk's emotion path (paper sections 3.1-3.3): the emotion embedder and its losses.

The release ships no training code and no emotion embedder. These rooms hold the pieces as reusable
modules: ``embedder`` (the disentangled emotion embedder), ``losses`` (InfoNCE, the VQ objective, the
emotion discrimination loss), ``synthetic`` (clips with known emotions, for tests and smoke runs),
``checkpoint`` (safetensors checkpoints with their config) and ``embedder_training`` (the loop and
the cluster metrics). ``python -m dicetalk_core.train embedder --help`` runs it.
"""
