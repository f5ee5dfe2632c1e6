"""One thin KFP component per pipeline step: typed inputs and outputs around a call into ``crnn.steps``.

Components are lightweight Python components on our own image (the library is installed there), so
``kfp.local`` runs exactly the functions a cluster runs. ``install_kfp_package=False``: the image has kfp.
"""

import os

from crnn.cluster.targets import image

# The image components are declared with; `crnn pipeline compile --registry --tag --target` sets the images of
# the compiled pipeline (the train task's per target), as `make images` tags them. CRNN_LOCAL_IMAGE names
# another for kfp.local's DockerRunner, which looks images up by their exact name: podman lists ours as
# localhost/crnn-pipeline/cpu:<tag>.
BASE_IMAGE = os.environ.get("CRNN_LOCAL_IMAGE") or image("cpu")
