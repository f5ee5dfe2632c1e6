"""One thin KFP component per pipeline step: typed inputs and outputs around a call into ``crnn.steps``.

Components are lightweight Python components on our own image (the library is installed there), so
``kfp.local`` runs exactly the functions a cluster runs. ``install_kfp_package=False``: the image has kfp.
"""

import os

# The image every component runs in; `make images` builds it (override when compiling for a registry).
BASE_IMAGE = os.environ.get("CRNN_IMAGE", "crnn-pipeline/cpu:0.1.0")
