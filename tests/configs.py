"""The smallest model section sleap-nn accepts (one backbone, one head), for configs
that tests only need to pass the worker's checks."""

MODEL_CONFIG = "model_config: {backbone_config: {unet: {}}, head_configs: {single_instance: {}}}\n"

#: A whole config (every section sleap-nn needs) around that model: the labels come from
#: the job (``labels_path``), as a pipeline stage gives them.
STAGE_CONFIG = "data_config: {}\n" + MODEL_CONFIG + "trainer_config: {}\n"
