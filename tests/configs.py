"""The smallest model section sleap-nn accepts (one backbone, one head), for configs
that tests only need to pass the worker's checks."""

MODEL_CONFIG = "model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}\n"
