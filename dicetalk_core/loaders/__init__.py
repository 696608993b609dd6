"""Reading weight files into the engine's modules: safely (no code in a file ever runs), strictly (key for
key, shape for shape), with errors that name the file and what it looks like instead.

``checkpoints`` reads and checks tensor files; ``svd`` and ``svd_single_file`` the SVD-xt parts (diffusers
folder or single file); ``dice_talk`` the four DICE-Talk files; ``whisper`` and ``rife`` the audio encoder
and the frame interpolator; ``stages`` keeps only the running stage's modules loaded.
"""
