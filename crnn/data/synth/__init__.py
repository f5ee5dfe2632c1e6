"""A synthetic word-image engine that follows the MJSynth recipe (Jaderberg et al. 2014).

Real words from a large English lexicon (with numbers, dates, prices and codes beside them), dozens of
packaged TrueType families at varied weights, borders and shadows, colours drawn from natural images,
projective distortion, natural-image and procedural textures blended under the text, blur, noise and JPEG
compression. Every resource is split in two, ``train`` and ``heldout`` (:mod:`crnn.data.synth.splits`): a
held-out benchmark drawn from the second shows whether a model reads words, fonts and surfaces it was never
shown. Every random choice comes from the ``numpy.random.Generator`` passed in, so a (seed, index) pair
always gives the same image on every machine with the pinned packages.
"""
