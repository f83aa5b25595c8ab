"""obliviate: make a trained classifier forget chosen training data, prove it forgot, keep the rest.

Library use, no CLI needed::

    import obliviate
    data = obliviate.load_data("fashion-mnist")
    model = obliviate.train(data, obliviate.TrainConfig(model="cnn", epochs=3)).model
    unlearned, record = obliviate.unlearn(model, data, obliviate.ForgetRequest.for_classes(3), method="unsir")
    again, _ = obliviate.unlearn(unlearned, data, obliviate.ForgetRequest.for_classes(5), method="unsir")  # 3 stays out
    obliviate.verify("runs/u1").ok   # a saved forget run's certificate still matches its files
"""
from .api import Checkpoint, forget, load_checkpoint
from .certificate import VerifyResult, history, verify
from .data import DataBundle, DataSpec, ForgetRequest, load_data
from .errors import AccessError, CheckpointError, ObliviateError, RequestError
from .methods import list_methods, unlearn
from .models import build_model, model_for
from .training import TrainConfig, train
from .verdict import VerdictRule

__version__ = "0.1.0"
__all__ = ["Checkpoint", "forget", "load_checkpoint", "VerifyResult", "history", "verify", "DataBundle", "DataSpec",
           "ForgetRequest", "load_data",
           "AccessError", "CheckpointError", "ObliviateError", "RequestError", "list_methods", "unlearn",
           "build_model", "model_for", "TrainConfig", "train", "VerdictRule", "__version__"]
